package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// browser starts a headless Chromium for t. Without one installed the test
// is skipped, unless GATEWAY_TEST_REQUIRE names chromium (as the README's
// test command sets), when it fails.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if strings.Contains(os.Getenv("GATEWAY_TEST_REQUIRE"), "chromium") {
			t.Fatal("chromium is required (GATEWAY_TEST_REQUIRE=chromium) but not installed")
		}
		t.Skip("chromium is not installed; `make test` installs it and runs this test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// artifact is where a test saves a file for people to look at:
// $GATEWAY_TEST_ARTIFACTS (make test sets artifacts/), else a temp dir.
func artifact(t *testing.T, name string, data []byte) {
	t.Helper()
	dir := os.Getenv("GATEWAY_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "gateway-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("saved %s", path)
}

// recordSteps makes the page remember every distinct text the last
// answer showed, in window.steps.
const recordSteps = `window.steps = [];
new MutationObserver(() => {
  const all = document.querySelectorAll('.msg[data-role="assistant"] .content');
  const text = all.length ? all[all.length - 1].textContent : "";
  if (text && window.steps[window.steps.length - 1] !== text) window.steps.push(text);
}).observe(document.getElementById("transcript"), {subtree: true, childList: true, characterData: true});
true`

// stopSlowAnswer sends prompt, waits until a few words of the answer are
// on screen, presses Stop and waits for the page to say it stopped.
func stopSlowAnswer(ctx context.Context, prompt string) error {
	return chromedp.Do(ctx,
		chromedp.SendKeys("#prompt", prompt),
		chromedp.Click("#send"),
		chromedp.Poll[chromedp.Void](`(() => { const s = document.querySelectorAll('.msg[data-state="streaming"] .content'); return s.length > 0 && s[0].textContent.split(" ").length > 3; })()`),
		chromedp.Click("#stop"),
		chromedp.WaitVisible(`.msg[data-state="stopped"]`),
	)
}

// TestPlaygroundInBrowser drives the playground in headless Chromium: the
// answer grows on screen in steps before done, Stop cancels the upstream,
// and screenshots (laptop light, phone dark) are saved.
func TestPlaygroundInBrowser(t *testing.T) {
	ctx := browser(t)
	h := newHarness(t, newConfig("", ""))
	err := chromedp.Do(ctx,
		chromedp.Navigate(h.http.URL+"/"),
		chromedp.WaitReady(`#model option[value="mock-gpt"]`),
		chromedp.Evaluate[chromedp.Void](recordSteps),
		chromedp.SendKeys("#prompt", "Hello there [mock tokens=8 delay=60ms]"),
		chromedp.Click("#send"),
		chromedp.WaitVisible(`.msg[data-state="done"]`),
	)
	if err != nil {
		t.Fatalf("first answer: %v", err)
	}
	steps, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.steps`))
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := chromedp.Run(ctx, chromedp.Text(`.msg[data-state="done"] .content`))
	usage, _ := chromedp.Run(ctx, chromedp.Text("#usage"))
	ttft, _ := chromedp.Run(ctx, chromedp.Text("#ttft"))
	if len(steps) < 3 || steps[len(steps)-1] != answer || len(strings.Fields(answer)) != 8 {
		t.Errorf("the answer %q appeared in %d steps: %q", answer, len(steps), steps)
	}
	if !strings.Contains(usage, "+") || !strings.HasSuffix(ttft, "ms") {
		t.Errorf("stats: usage %q, ttft %q", usage, ttft)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "playground.png", shot)

	// Stop during a slow answer: the upstream is cancelled, as the
	// gateway's metrics and log say.
	err = stopSlowAnswer(ctx, "Tell me everything [mock tokens=400 delay=50ms]")
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	h.logs.waitFor(t, `"end":"client_gone"`)
	h.logs.waitFor(t, `"msg":"stream finished"`)
	if got := h.metric(t, "gateway_streams_cancelled_total", "reason", "last_reader"); got != 1 {
		t.Errorf("upstreams cancelled after Stop = %v, want 1", got)
	}
	if got := h.metric(t, "gateway_stream_endings_total", "endpoint", "native", "reason", "client_gone"); got != 1 {
		t.Errorf("native streams ended client_gone = %v, want 1", got)
	}

	// Phone, dark mode, with an error on screen.
	err = chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 780, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
			})
			return err
		}),
		chromedp.SendKeys("#prompt", "And now fail [mock tokens=6 delay=20ms fail_after=3]"),
		chromedp.Click("#send"),
		chromedp.WaitVisible(`.msg[data-state="error"] .error`),
	)
	if err != nil {
		t.Fatalf("phone: %v", err)
	}
	shown, _ := chromedp.Run(ctx, chromedp.Text(`.msg[data-state="error"] .error`))
	if !strings.HasPrefix(shown, "mock_failure: ") {
		t.Errorf("error shown as %q", shown)
	}
	if shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	}
	artifact(t, "playground-phone-dark.png", shot)
}

// TestPlaygroundShowsThinking: a reasoning model's thinking appears as it
// streams, apart from the answer, which follows it.
func TestPlaygroundShowsThinking(t *testing.T) {
	ctx := browser(t)
	h := newHarness(t, newConfig("", ""))
	err := chromedp.Do(ctx,
		chromedp.Navigate(h.http.URL+"/"),
		chromedp.WaitReady(`#model option[value="mock-gpt"]`),
		chromedp.SendKeys("#prompt", "Think first [mock reasoning=6 tokens=4 delay=40ms]"),
		chromedp.Click("#send"),
		// The thinking shows while the answer has not begun.
		chromedp.Poll[chromedp.Void](`(() => { const r = document.querySelector('.msg[data-state="streaming"] .thinking .reasoning'); const c = document.querySelector('.msg[data-state="streaming"] .content'); return r && r.textContent.split(" ").length >= 2 && c && c.textContent === ""; })()`),
		chromedp.WaitVisible(`.msg[data-state="done"]`),
	)
	if err != nil {
		t.Fatalf("thinking: %v", err)
	}
	// Collapsed once the answer began: its text is still there.
	thought, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('.msg[data-state="done"] .thinking .reasoning').textContent`))
	answer, _ := chromedp.Run(ctx, chromedp.Text(`.msg[data-state="done"] .content`))
	if thought != "Let me think this through step" || len(strings.Fields(answer)) != 4 || strings.Contains(answer, "think") {
		t.Errorf("thinking %q, answer %q", thought, answer)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "playground-thinking.png", shot)
}

// cutProxy is a reverse proxy in front of the gateway that drops the
// first connection following a stream (GET /v1/streams/...) once it has
// carried cutAfter events: a network that fails mid-answer.
type cutProxy struct {
	*httptest.Server
	mu      sync.Mutex
	cut     bool
	resumes []string // the Last-Event-ID of every follow request
	// release lets the cut happen: the first connection holds its last
	// event's delivery until the test has seen the page show it, since a
	// browser may drop an event that arrives together with the
	// connection's end.
	release chan struct{}
}

func newCutProxy(t *testing.T, target string, cutAfter int) *cutProxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p := &cutProxy{release: make(chan struct{})}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/streams/") {
			p.mu.Lock()
			p.resumes = append(p.resumes, r.Header.Get("Last-Event-ID"))
			first := !p.cut
			p.cut = true
			p.mu.Unlock()
			if first {
				w = &cutWriter{ResponseWriter: w, left: cutAfter, release: p.release}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// cutWriter fails once left events have gone through (written, flushed,
// and release closed); the reverse proxy then aborts the response, and
// the client sees its connection drop.
type cutWriter struct {
	http.ResponseWriter
	left    int
	release chan struct{}
}

func (c *cutWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) && c.left > 0 {
		i := strings.Index(string(b[n:]), "\n\n")
		if i < 0 {
			i = len(b) - n - 2
		}
		end := n + i + 2
		if _, err := c.ResponseWriter.Write(b[n:end]); err != nil {
			return n, err
		}
		if strings.HasSuffix(string(b[n:end]), "\n\n") && strings.Contains(string(b[n:end]), "data: ") {
			c.left--
		}
		n = end
	}
	if c.left == 0 {
		c.Flush()
		select {
		case <-c.release:
		case <-time.After(10 * time.Second):
		}
		return n, errors.New("connection cut")
	}
	return n, nil
}

func (c *cutWriter) Flush() { c.ResponseWriter.(http.Flusher).Flush() }

// readmeResume is the README's EventSource example, recording what it
// shows instead of writing to a page element.
const readmeResume = `window.got = []; window.finished = false;
(async () => {
  const base = "";
  const res = await fetch(base + "/v1/streams", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "mock-gpt", prompt: "Hello! [mock tokens=12 delay=40ms]" }),
  });
  if (!res.ok) throw new Error((await res.json()).error.message);
  const { events_url } = await res.json();
  window.eventsURL = events_url;
  const es = new EventSource(base + events_url);
  es.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    window.got.push(msg.lastEventId + " " + msg.data);
    if (ev.type === "done" || ev.type === "error") { es.close(); window.finished = true; }
  };
})();
true`

// TestREADMEResumeInBrowser runs the README's EventSource example in
// Chromium through a connection that drops after a few events: the
// browser reconnects by itself with Last-Event-ID, and what the page got
// equals a full replay, nothing lost or twice.
func TestREADMEResumeInBrowser(t *testing.T) {
	ctx := browser(t)
	h := newHarness(t, newConfig("", ""))
	proxy := newCutProxy(t, h.http.URL, 4)
	err := chromedp.Do(ctx,
		chromedp.Navigate(proxy.URL+"/"),
		chromedp.Evaluate[chromedp.Void](readmeResume),
		chromedp.Poll[chromedp.Void](`window.got.length >= 4`),
	)
	close(proxy.release) // the page has event 4: now the connection drops
	if err == nil {
		err = chromedp.Do(ctx, chromedp.Poll[chromedp.Void](`window.finished`))
	}
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.got`))
	if err != nil {
		t.Fatal(err)
	}
	url, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.eventsURL`))
	var want []string
	for _, ev := range h.replay(t, url) {
		want = append(want, ev.ID+" "+ev.Data)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the page got:\n%s\nthe full replay:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	if len(proxy.resumes) < 2 || proxy.resumes[0] != "" || proxy.resumes[1] != "4" {
		t.Errorf("Last-Event-ID of each connection: %q; want the browser to resume after event 4", proxy.resumes)
	}
}

// TestPlaygroundSpeaksEachAPI: switched to Anthropic's Messages API (and
// to OpenAI's chat completions), the playground streams thinking and
// answer from that endpoint, and Stop cancels its upstream.
func TestPlaygroundSpeaksEachAPI(t *testing.T) {
	ctx := browser(t)
	h := newHarness(t, newConfig("", ""))
	err := chromedp.Do(ctx,
		chromedp.Navigate(h.http.URL+"/"),
		chromedp.WaitReady(`#model option[value="mock-gpt"]`),
		chromedp.SetValue("#api", "messages"),
		chromedp.Evaluate[chromedp.Void](recordSteps),
		chromedp.SendKeys("#prompt", "Think, then answer [mock reasoning=4 tokens=6 delay=40ms]"),
		chromedp.Click("#send"),
		chromedp.WaitVisible(`.msg[data-state="done"]`),
	)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	steps, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.steps`))
	thought, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('.msg[data-state="done"] .thinking .reasoning').textContent`))
	answer, _ := chromedp.Run(ctx, chromedp.Text(`.msg[data-state="done"] .content`))
	meta, _ := chromedp.Run(ctx, chromedp.Text(`.msg[data-state="done"] .meta`))
	if len(steps) < 3 || len(strings.Fields(answer)) != 6 || thought == "" || !strings.HasPrefix(meta, "end_turn · ") {
		t.Errorf("answer %q in %d steps, thinking %q, meta %q", answer, len(steps), thought, meta)
	}
	if got := h.metric(t, "gateway_stream_endings_total", "endpoint", "messages", "reason", "done"); got != 1 {
		t.Errorf("messages streams done = %v, want 1", got)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "playground-messages.png", shot)

	err = stopSlowAnswer(ctx, "Go on and on [mock tokens=400 delay=50ms]")
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	h.logs.waitFor(t, `"end":"client_gone"`)
	if got := h.metric(t, "gateway_stream_endings_total", "endpoint", "messages", "reason", "client_gone"); got != 1 {
		t.Errorf("messages streams ended client_gone after Stop = %v, want 1", got)
	}

	// The chat completions and responses switches, on the same
	// conversation.
	for i, api := range []string{"chat", "responses"} {
		err = chromedp.Do(ctx,
			chromedp.SetValue("#api", api),
			chromedp.SendKeys("#prompt", "Once more [mock reasoning=2 tokens=5 delay=20ms]"),
			chromedp.Click("#send"),
			chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelectorAll('.msg[data-state="done"]').length === %d`, i+2)),
		)
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		if got := h.metric(t, "gateway_stream_endings_total", "endpoint", api, "reason", "done"); got != 1 {
			t.Errorf("%s streams done = %v, want 1", api, got)
		}
	}
	meta, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('.msg[data-state="done"] .meta')].pop().textContent`))
	if !strings.HasPrefix(meta, "completed · 7 tokens") {
		t.Errorf("responses answer meta %q", meta)
	}
}

// TestUsagePageInBrowser drives the usage page at /admin in headless
// Chromium: a key without admin is told so; the admin key shows today's
// spend as a bar, the top keys and models, and the key's budget bar; a
// screenshot is saved.
func TestUsagePageInBrowser(t *testing.T) {
	ctx := browser(t)
	h := withUsage(t)
	err := chromedp.Do(ctx,
		chromedp.Navigate(h.http.URL+"/admin"),
		chromedp.SendKeys("#admin-key", frontendKey),
		chromedp.Click("#load"),
		chromedp.WaitVisible("#error"),
	)
	if err != nil {
		t.Fatalf("non-admin key: %v", err)
	}
	if msg, _ := chromedp.Run(ctx, chromedp.Text("#error")); !strings.Contains(msg, "admin") {
		t.Errorf("a key without admin was told %q", msg)
	}
	err = chromedp.Do(ctx,
		chromedp.SetValue("#admin-key", batchKey),
		chromedp.Click("#load"),
		chromedp.WaitReady(`body[data-loaded="true"]`),
	)
	if err != nil {
		t.Fatalf("admin key: %v", err)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	bar, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`Number(document.querySelector('#chart-cost rect[data-day="`+today+`"]').getAttribute("height"))`))
	if err != nil || bar <= 0 {
		t.Errorf("today's spend bar: height %v, %v", bar, err)
	}
	keys, _ := chromedp.Run(ctx, chromedp.Text("#top-keys tbody"))
	models, _ := chromedp.Run(ctx, chromedp.Text("#top-models tbody"))
	budget, _ := chromedp.Run(ctx, chromedp.Text(`.budget[data-key="frontend"] .label`))
	requests, _ := chromedp.Run(ctx, chromedp.Text("#total-requests"))
	if !strings.Contains(keys, "frontend") || !strings.Contains(models, "custom") || !strings.Contains(models, "bundled") ||
		!strings.Contains(budget, "of $5.00 per day") || requests != "3" {
		t.Errorf("keys %q, models %q, budget %q, requests %q", keys, models, budget, requests)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artifact(t, "usage-page.png", shot)
}
