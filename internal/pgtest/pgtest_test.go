package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/streamgate/gateway/internal/pgtest"
)

// TestStartStopRestart: the server answers, and answers again after an
// outage, with its data.
func TestStartStopRestart(t *testing.T) {
	s := pgtest.Start(t)
	ctx := context.Background()
	exec := func(sql string) error {
		c, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := exec("SELECT 1"); err == nil {
		t.Fatal("the server answered while stopped")
	}
	s.Restart()
	if err := exec("SELECT x FROM kept"); err != nil {
		t.Fatal(err)
	}
}
