package gateway

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/ledger"
)

// maxUsageRange bounds the time range one usage query may cover.
const maxUsageRange = 400 * 24 * time.Hour

// handleUsage serves GET /admin/usage: the ledger summed over [from, to)
// (RFC 3339 times or YYYY-MM-DD dates, UTC; by default the last 30 days),
// grouped by the comma-separated columns of by (day, key, model; default
// day), optionally for one key, as JSON or, with format=csv or Accept:
// text/csv, as CSV.
func (s *Server) handleUsage(c *gin.Context) {
	if s.usage == nil {
		api.WriteError(c, &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "ledger_off",
			Message: "the usage ledger is off: set ledger.backend to sqlite or postgres"})
		return
	}
	q, fe := usageQuery(c, s.now())
	if fe != nil {
		api.WriteError(c, fe)
		return
	}
	rows, err := s.usage.Usage(c.Request.Context(), q)
	if err != nil {
		s.log.Warn("usage query failed", "error", err.Error())
		api.WriteError(c, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "ledger_unavailable", Message: "the usage ledger could not be read"})
		return
	}
	if c.Query("format") == "csv" || strings.Contains(c.GetHeader("Accept"), "text/csv") {
		writeUsageCSV(c, q, rows)
		return
	}
	if rows == nil {
		rows = []ledger.Total{}
	}
	c.JSON(http.StatusOK, gin.H{"from": q.From.Format(time.RFC3339), "to": q.To.Format(time.RFC3339), "by": q.By, "key": q.Key, "data": rows})
}

func usageQuery(c *gin.Context, now time.Time) (ledger.Query, *failure.Error) {
	bad := func(param, format string, args ...any) *failure.Error {
		return &failure.Error{Status: http.StatusBadRequest, Type: failure.TypeInvalidRequest, Code: "invalid_request_error", Param: param, Message: fmt.Sprintf(format, args...)}
	}
	q := ledger.Query{To: now.UTC(), From: now.UTC().AddDate(0, 0, -30), Key: c.Query("key"), By: []string{"day"}}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		v := c.Query(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			if t, err = time.Parse(time.DateOnly, v); err != nil {
				return q, bad(p.name, "%s=%s is neither an RFC 3339 time nor a YYYY-MM-DD date", p.name, failure.Quote(v))
			}
		}
		*p.dst = t.UTC()
	}
	if !q.From.Before(q.To) {
		return q, bad("from", "from must be before to")
	}
	if q.To.Sub(q.From) > maxUsageRange {
		return q, bad("from", "the range may cover at most %d days", int(maxUsageRange.Hours()/24))
	}
	if by, ok := c.GetQuery("by"); ok {
		q.By = nil
		for _, b := range strings.Split(by, ",") {
			switch b = strings.TrimSpace(b); b {
			case "":
			case "day", "key", "model":
				if !slices.Contains(q.By, b) {
					q.By = append(q.By, b)
				}
			default:
				return q, bad("by", "cannot group by %s: use day, key or model", failure.Quote(b))
			}
		}
	}
	return q, nil
}

func writeUsageCSV(c *gin.Context, q ledger.Query, rows []ledger.Total) {
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Header("Content-Disposition", `attachment; filename="usage.csv"`)
	c.Status(http.StatusOK)
	w := csv.NewWriter(c.Writer)
	head := append(slices.Clone(q.By), "requests", "errors", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "cost_usd")
	_ = w.Write(head)
	i64 := func(n int64) string { return strconv.FormatInt(n, 10) }
	for _, r := range rows {
		var rec []string
		for _, b := range q.By {
			switch b {
			case "day":
				rec = append(rec, r.Day)
			case "key":
				rec = append(rec, r.Key)
			case "model":
				rec = append(rec, r.Model)
			}
		}
		rec = append(rec, i64(r.Requests), i64(r.Errors), i64(r.PromptTokens), i64(r.CachedTokens), i64(r.CompletionTokens),
			i64(r.ReasoningTokens), strconv.FormatFloat(r.Cost, 'f', -1, 64))
		_ = w.Write(rec)
	}
	w.Flush()
}

// handleBudgets serves GET /admin/budgets: every key with a budget, its
// amounts, what its current window has spent (requests in flight left
// out) and when it resets.
func (g *generation) handleBudgets(c *gin.Context) {
	names := make([]string, 0, len(g.cfg.Keys))
	for name := range g.cfg.Keys {
		names = append(names, name)
	}
	if g.ring != nil {
		for _, name := range g.ring.Names() {
			if _, dup := g.cfg.Keys[name]; !dup {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	out := []gin.H{}
	for _, name := range names {
		l, spent, reset, ok, err := g.engine.Admitter.Budget(c.Request.Context(), name)
		if !ok {
			continue
		}
		b := gin.H{"key": name, "period": l.Period, "dollars": l.Dollars.Float(), "tokens": l.Tokens,
			"soft_dollars": l.SoftDollars.Float(), "soft_tokens": l.SoftTokens,
			"spent_dollars": spent.Cost.Float(), "spent_tokens": spent.Tokens}
		if !reset.IsZero() {
			b["resets_at"] = reset.Format(time.RFC3339)
		}
		if err != nil {
			b["error"] = "the budget store is unavailable"
		}
		out = append(out, b)
	}
	c.JSON(http.StatusOK, gin.H{"data": out})
}
