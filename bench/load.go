package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Format is the stream format a target speaks.
type Format string

const (
	// FormatChat is OpenAI's chat.completion.chunk stream (the mock
	// upstream, the baseline proxy, and the gateway's
	// /v1/chat/completions).
	FormatChat Format = "chat"
	// FormatNative is the gateway's /v1/stream events.
	FormatNative Format = "native"
	// FormatMessages is Anthropic's Messages stream (/v1/messages).
	FormatMessages Format = "messages"
	// FormatResponses is OpenAI's Responses stream (/v1/responses).
	FormatResponses Format = "responses"
)

// Load describes one load run against one endpoint.
type Load struct {
	URL    string // full endpoint URL
	Format Format
	Model  string
	// Tokens and Delay are asked of the mock upstream through a prompt
	// directive, so they reach it through any proxy in between. The first
	// token comes after Delay too.
	Tokens int
	Delay  time.Duration
	// Concurrency is the number of streams kept open at once.
	Concurrency int
	// Requests is the total number of streams to run; when 0, streams are
	// started until Duration has passed.
	Requests int
	Duration time.Duration
	// RampUp spreads the start of the workers over this time, so that
	// thousands of connections do not arrive in one burst.
	RampUp time.Duration
	// H2C speaks cleartext HTTP/2 to the target (one connection carries
	// many streams), as a load balancer in front of it might.
	H2C bool
	// Key, when set, is sent as a bearer token (the gateway's API key;
	// the baseline and the mock ignore it).
	Key string
	// Instructions, when above 0, is how many bytes of system
	// instructions each request carries, as an agent's do: Responses'
	// instructions, Messages' system, a chat system message (native
	// requests have none).
	Instructions int
}

// Result is what a load run measured, on the client side.
type Result struct {
	Streams int   `json:"streams"` // completed with the right token count and a terminal event
	Errors  int   `json:"errors"`
	Chunks  int64 `json:"chunks"` // content chunks received
	// ElapsedSec is the wall time of the run.
	ElapsedSec   float64  `json:"elapsed_s"`
	ChunksPerSec float64  `json:"chunks_per_s"`
	TTFT         Summary  `json:"ttft"`            // request start to first content chunk
	Gap          Summary  `json:"gap"`             // between content chunks of a stream
	Duration     Summary  `json:"stream_duration"` // request start to terminal event
	ErrorSamples []string `json:"error_samples,omitempty"`
}

// worker state: each worker records into its own histograms.
type worker struct {
	ttft, dur     exact
	gap           hist
	chunks        int64
	streams, errs int
	samples       []string
}

// Run drives l until its requests are done or its duration has passed, or
// ctx ends.
func Run(ctx context.Context, l Load) (*Result, error) {
	if l.Concurrency < 1 || l.Tokens < 1 || (l.Requests == 0 && l.Duration == 0) {
		return nil, fmt.Errorf("load: need concurrency, tokens, and requests or a duration: %+v", l)
	}
	if l.Instructions < 0 {
		return nil, fmt.Errorf("load: instructions of %d bytes", l.Instructions)
	}
	body := requestBody(l)
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        l.Concurrency,
		MaxIdleConnsPerHost: l.Concurrency,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	if l.H2C {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	var deadline time.Time
	if l.Requests == 0 {
		deadline = time.Now().Add(l.RampUp + l.Duration)
	}
	var started atomic.Int64
	take := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if l.Requests > 0 {
			return started.Add(1) <= int64(l.Requests)
		}
		return time.Now().Before(deadline)
	}

	workers := make([]worker, l.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range workers {
		w := &workers[i]
		delay := time.Duration(0)
		if l.RampUp > 0 {
			delay = l.RampUp * time.Duration(i) / time.Duration(l.Concurrency)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
			for take() {
				w.stream(ctx, client, l, body)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all worker
	for i := range workers {
		w := &workers[i]
		all.ttft.merge(&w.ttft)
		all.gap.merge(&w.gap)
		all.dur.merge(&w.dur)
		all.chunks += w.chunks
		all.streams += w.streams
		all.errs += w.errs
		for _, s := range w.samples {
			if len(all.samples) < 5 {
				all.samples = append(all.samples, s)
			}
		}
	}
	r := &Result{
		Streams: all.streams, Errors: all.errs, Chunks: all.chunks,
		ElapsedSec: elapsed.Seconds(), ChunksPerSec: float64(all.chunks) / elapsed.Seconds(),
		TTFT: all.ttft.summary(), Gap: all.gap.summary(), Duration: all.dur.summary(),
		ErrorSamples: all.samples,
	}
	return r, ctx.Err()
}

// skipLine reads past the rest of a line longer than br's buffer.
func skipLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

func requestBody(l Load) []byte {
	prompt := fmt.Sprintf("benchmark [mock tokens=%d delay=%s first_delay=%s]", l.Tokens, l.Delay, l.Delay)
	system := strings.Repeat("Answer briefly. ", (l.Instructions+15)/16)[:l.Instructions]
	switch l.Format {
	case FormatNative:
		return fmt.Appendf(nil, `{"model":%q,"prompt":%q}`, l.Model, prompt)
	case FormatMessages:
		if system != "" {
			return fmt.Appendf(nil, `{"model":%q,"max_tokens":%d,"stream":true,"system":%q,"messages":[{"role":"user","content":%q}]}`, l.Model, l.Tokens+16, system, prompt)
		}
		return fmt.Appendf(nil, `{"model":%q,"max_tokens":%d,"stream":true,"messages":[{"role":"user","content":%q}]}`, l.Model, l.Tokens+16, prompt)
	case FormatResponses:
		if system != "" {
			return fmt.Appendf(nil, `{"model":%q,"stream":true,"store":false,"instructions":%q,"input":%q}`, l.Model, system, prompt)
		}
		return fmt.Appendf(nil, `{"model":%q,"stream":true,"store":false,"input":%q}`, l.Model, prompt)
	}
	if system != "" {
		return fmt.Appendf(nil, `{"model":%q,"stream":true,"messages":[{"role":"system","content":%q},{"role":"user","content":%q}]}`, l.Model, system, prompt)
	}
	return fmt.Appendf(nil, `{"model":%q,"stream":true,"messages":[{"role":"user","content":%q}]}`, l.Model, prompt)
}

func (w *worker) fail(err error) {
	w.errs++
	if len(w.samples) < 5 {
		w.samples = append(w.samples, err.Error())
	}
}

var (
	dataPrefix   = []byte("data: ")
	nativeDelta  = []byte(`{"type":"delta"`)
	nativeDone   = []byte(`{"type":"done"`)
	nativeError  = []byte(`{"type":"error"`)
	chatContent  = []byte(`"delta":{"content":"`)
	chatDone     = []byte("[DONE]")
	chatError    = []byte(`{"error"`)
	msgText      = []byte(`"type":"text_delta"`)
	msgStop      = []byte(`{"type":"message_stop"`)
	msgError     = []byte(`{"type":"error"`)
	respText     = []byte(`{"type":"response.output_text.delta"`)
	respDone     = []byte(`{"type":"response.completed"`)
	respFailed   = []byte(`{"type":"response.failed"`)
	errNoEnd     = errors.New("stream ended without a terminal event")
	errTruncated = errors.New("wrong number of content chunks")
)

// stream runs one request and reads its events as they arrive.
func (w *worker) stream(ctx context.Context, client *http.Client, l Load, body []byte) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL, bytes.NewReader(body))
	if err != nil {
		w.fail(err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if l.Key != "" {
		req.Header.Set("Authorization", "Bearer "+l.Key)
	}
	resp, err := client.Do(req)
	if err != nil {
		w.fail(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		w.fail(fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b))))
		return
	}
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	var (
		chunks int
		last   time.Time
	)
	for {
		line, err := br.ReadSlice('\n')
		// A line longer than the buffer (a Responses response object that
		// echoes long instructions) is told by its start; the rest is
		// skipped once it is.
		long := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !long {
			if errors.Is(err, io.EOF) {
				err = errNoEnd
			}
			w.fail(fmt.Errorf("after %d chunks: %w", chunks, err))
			return
		}
		data, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			if long && skipLine(br) != nil {
				w.fail(fmt.Errorf("after %d chunks: %w", chunks, errNoEnd))
				return
			}
			continue
		}
		var content, done, failed bool
		switch l.Format {
		case FormatNative:
			content, done, failed = bytes.HasPrefix(data, nativeDelta), bytes.HasPrefix(data, nativeDone), bytes.HasPrefix(data, nativeError)
		case FormatMessages:
			content, done, failed = bytes.Contains(data, msgText), bytes.HasPrefix(data, msgStop), bytes.HasPrefix(data, msgError)
		case FormatResponses:
			content, done, failed = bytes.HasPrefix(data, respText), bytes.HasPrefix(data, respDone), bytes.HasPrefix(data, respFailed) || bytes.HasPrefix(data, msgError)
		default:
			content, done, failed = bytes.Contains(data, chatContent), bytes.HasPrefix(data, chatDone), bytes.HasPrefix(data, chatError)
		}
		if failed {
			data = bytes.Clone(data[:min(len(data), 512)])
		}
		if long && skipLine(br) != nil {
			w.fail(fmt.Errorf("after %d chunks: %w", chunks, errNoEnd))
			return
		}
		now := time.Now()
		switch {
		case content:
			if chunks == 0 {
				w.ttft.add(now.Sub(start))
			} else {
				w.gap.add(now.Sub(last))
			}
			last = now
			chunks++
		case failed:
			w.fail(fmt.Errorf("error event after %d chunks: %s", chunks, bytes.TrimSpace(data)))
			return
		case done:
			if chunks != l.Tokens {
				w.fail(fmt.Errorf("%w: got %d, want %d", errTruncated, chunks, l.Tokens))
				return
			}
			w.dur.add(now.Sub(start))
			w.chunks += int64(chunks)
			w.streams++
			// Read to the end as SDKs and browsers do, so the connection
			// is reused instead of torn down under the server.
			_, _ = io.Copy(io.Discard, br)
			return
		}
	}
}
