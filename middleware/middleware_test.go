package middleware

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/outcome"
)

func newEngine(logs io.Writer) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	log := slog.New(slog.NewJSONHandler(logs, nil))
	e.Use(RequestID(), AccessLog(log), Recovery(log), NewBodies(1<<20).Limit(16, time.Second))
	e.GET("/panic", func(c *gin.Context) { panic("boom") })
	e.GET("/panic-late", func(c *gin.Context) {
		c.Writer.WriteHeader(200)
		_, _ = c.Writer.Write([]byte("partial"))
		panic("late boom")
	})
	e.GET("/abort", func(c *gin.Context) { panic(http.ErrAbortHandler) })
	e.POST("/echo", func(c *gin.Context) {
		info := Get(c)
		info.Model, info.Provider, info.End = "m", "p", outcome.Done
		_, err := io.ReadAll(c.Request.Body)
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			c.Status(http.StatusRequestEntityTooLarge)
			return
		}
		c.Status(http.StatusOK)
	})
	return e
}

func TestRecovery(t *testing.T) {
	var logs bytes.Buffer
	ts := httptest.NewServer(newEngine(&logs))
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/panic")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 500 || body.Error.Code != "internal_error" {
		t.Errorf("panic: %d %+v", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), `"status":500`) {
		t.Errorf("panic not logged with its status:\n%s", logs.String())
	}

	// After the headers went out, and for ErrAbortHandler, the only honest
	// answer is a broken connection.
	for _, path := range []string{"/panic-late", "/abort"} {
		resp, err := http.Get(ts.URL + path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Errorf("%s: response completed normally", path)
		}
	}
}

func TestBodyLimitAndAccessLog(t *testing.T) {
	var logs bytes.Buffer
	ts := httptest.NewServer(newEngine(&logs))
	defer ts.Close()

	resp, _ := http.Post(ts.URL+"/echo", "application/json", strings.NewReader(strings.Repeat("x", 17)))
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("declared length over limit: %d", resp.StatusCode)
	}
	resp, _ = http.Post(ts.URL+"/echo", "application/json", io.MultiReader(strings.NewReader(strings.Repeat("x", 17))))
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over limit: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", ts.URL+"/echo", strings.NewReader("ok"))
	req.Header.Set("X-Request-ID", "abc-1")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()

	var line map[string]any
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &line); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"request_id": "abc-1", "method": "POST", "path": "/echo", "status": 200.0, "model": "m", "provider": "p", "end": "done"} {
		if line[k] != want {
			t.Errorf("log field %s = %v, want %v (line %v)", k, line[k], want, line)
		}
	}
}
