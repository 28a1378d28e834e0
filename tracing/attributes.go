package tracing

import "go.opentelemetry.io/otel/attribute"

// Attributes of the OpenTelemetry GenAI semantic conventions.
const (
	// Operation is chat for generations, embeddings for embeddings.
	Operation = attribute.Key("gen_ai.operation.name")
	// System is the provider's kind (openai, anthropic, mock); Provider
	// the same under the conventions' newer name.
	System         = attribute.Key("gen_ai.system")
	Provider       = attribute.Key("gen_ai.provider.name")
	RequestModel   = attribute.Key("gen_ai.request.model")
	ResponseModel  = attribute.Key("gen_ai.response.model")
	MaxTokens      = attribute.Key("gen_ai.request.max_tokens")
	Temperature    = attribute.Key("gen_ai.request.temperature")
	TopP           = attribute.Key("gen_ai.request.top_p")
	InputTokens    = attribute.Key("gen_ai.usage.input_tokens")
	OutputTokens   = attribute.Key("gen_ai.usage.output_tokens")
	FinishReasons  = attribute.Key("gen_ai.response.finish_reasons")
	InputMessages  = attribute.Key("gen_ai.input.messages")
	OutputMessages = attribute.Key("gen_ai.output.messages")
	// ErrorType is the conventions' error.type: the gateway's error code.
	ErrorType = attribute.Key("error.type")
)

// The gateway's own attributes.
const (
	RequestID = attribute.Key("gateway.request_id")
	// KeyName is the name of the gateway key used, never the key.
	KeyName = attribute.Key("gateway.key_name")
	// Endpoint is the API dialect (chat, messages, responses, native).
	Endpoint = attribute.Key("gateway.endpoint")
	// Route is the configured provider an attempt went to.
	Route     = attribute.Key("gateway.provider")
	Attempt   = attribute.Key("gateway.attempt")
	Attempts  = attribute.Key("gateway.attempts")
	Fallbacks = attribute.Key("gateway.fallbacks")
	// TTFT is the time to first token from the request's arrival, in
	// milliseconds.
	TTFT = attribute.Key("gateway.time_to_first_token_ms")
	// End is how the stream ended (done, upstream_error, client_gone...).
	End       = attribute.Key("gateway.end")
	ErrorCode = attribute.Key("gateway.error_code")
	Cost      = attribute.Key("gateway.cost_usd")
	// Admitted says whether admission let the request in.
	Admitted = attribute.Key("gateway.admitted")
	// Wait is a retry's backoff before the next attempt, in
	// milliseconds.
	Wait = attribute.Key("gateway.wait_ms")
)

// Span and event names.
const (
	SpanAdmission   = "admission"
	SpanRelay       = "relay"
	EventFirstToken = "first_token"
	EventRetry      = "retry"
	EventFallback   = "fallback"
)
