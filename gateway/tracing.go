package gateway

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/tracing"
)

// newTracerProvider builds the tracer provider cfg configures, exporting in batches
// off the request path (a collector that is slow or down costs dropped
// spans, never a waiting request). It returns nil when tracing is off.
// extra options come after the configured ones (tests add a span
// processor that tells them when a span ends).
func newTracerProvider(ctx context.Context, cfg config.Tracing, extra ...sdktrace.TracerProviderOption) (*sdktrace.TracerProvider, error) {
	if !TracingEnabled(cfg) {
		return nil, nil
	}
	exp, err := traceExporter(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := serviceResource(ctx, cfg.ServiceName)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if r := cfg.SampleRatio; r != nil {
		// Otherwise the SDK reads OTEL_TRACES_SAMPLER (by default
		// parentbased_always_on).
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*r))))
	}
	return sdktrace.NewTracerProvider(append(opts, extra...)...), nil
}

// TracingEnabled reports whether cfg turns tracing on: enabled in the file and
// not disabled by OTEL_SDK_DISABLED.
func TracingEnabled(cfg config.Tracing) bool {
	return cfg.Enabled && !strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true")
}

// tracingProtocol is the OTLP protocol cfg exports with: the file's, else
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL's, else OTEL_EXPORTER_OTLP_PROTOCOL's,
// else http/protobuf.
func tracingProtocol(cfg config.Tracing) string {
	for _, p := range []string{cfg.Protocol, os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")} {
		if p != "" {
			return p
		}
	}
	return config.TracingHTTP
}

// traceExporter is the OTLP exporter of cfg. What the file leaves empty the
// exporter reads from OTEL_EXPORTER_OTLP_* itself.
func traceExporter(ctx context.Context, cfg config.Tracing) (*otlptrace.Exporter, error) {
	headers := make(map[string]string, len(cfg.Headers))
	for k, v := range cfg.Headers {
		headers[k] = v.Reveal()
	}
	switch p := tracingProtocol(cfg); p {
	case config.TracingHTTP:
		var opts []otlptracehttp.Option
		if cfg.Endpoint != "" {
			u, err := url.Parse(string(cfg.Endpoint))
			if err != nil {
				return nil, fmt.Errorf("endpoint: %w", err)
			}
			// A base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is: traces go
			// to its /v1/traces.
			if u.Path == "" || u.Path == "/" {
				u.Path = "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		if len(headers) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(headers))
		}
		return otlptracehttp.New(ctx, opts...)
	case config.TracingGRPC:
		var opts []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(string(cfg.Endpoint)))
		}
		if len(headers) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(headers))
		}
		return otlptracegrpc.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("OTLP protocol %q is not supported (use %s or %s)", p, config.TracingHTTP, config.TracingGRPC)
	}
}

// serviceResource describes the process: service.name is the config's,
// else OTEL_SERVICE_NAME's, else tracing.DefaultServiceName; OTEL_RESOURCE_ATTRIBUTES
// adds to it.
func serviceResource(ctx context.Context, name string) (*resource.Resource, error) {
	opts := []resource.Option{
		resource.WithAttributes(attribute.String("service.name", tracing.DefaultServiceName)),
		resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost(),
	}
	if name != "" {
		opts = append(opts, resource.WithAttributes(attribute.String("service.name", name)))
	}
	return resource.New(ctx, opts...)
}
