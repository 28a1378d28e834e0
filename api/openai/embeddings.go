package openai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// Bounds of an embeddings request, as OpenAI's.
const (
	maxEmbedInputs     = 2048
	maxEmbedDimensions = 8192
)

// embedRequest is the body of POST /v1/embeddings.
type embedRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
}

// inputs reads input: a string, or an array of strings. Token arrays are
// refused: the gateway routes by text and counts text.
func (er *embedRequest) inputs() ([]string, *failure.Error) {
	raw := api.NullToEmpty(er.Input)
	if len(raw) == 0 {
		return nil, failure.BadParam("missing_input", "input", "input is required: a string or an array of strings")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, failure.BadParam("invalid_type", "input", "input must be a string or an array of strings (token arrays are not supported)")
	}
	if len(many) == 0 || len(many) > maxEmbedInputs {
		return nil, failure.BadParam("invalid_value", "input", fmt.Sprintf("input must hold 1 to %d strings, got %d", maxEmbedInputs, len(many)))
	}
	return many, nil
}

// embeddings serves POST /v1/embeddings.
func (d *Dialect) embeddings(c *gin.Context) {
	var body embedRequest
	if e := api.DecodeJSON(c.Request, &body, true); e != nil {
		d.WriteError(c, e)
		return
	}
	if body.Model == "" {
		d.WriteError(c, failure.BadParam("missing_model", "model", "model is required"))
		return
	}
	in, e := body.inputs()
	if e != nil {
		d.WriteError(c, e)
		return
	}
	if body.EncodingFormat != "" && body.EncodingFormat != "float" && body.EncodingFormat != "base64" {
		d.WriteError(c, failure.BadParam("invalid_value", "encoding_format", "encoding_format must be float or base64, not "+failure.Quote(body.EncodingFormat)))
		return
	}
	req := &providers.EmbedRequest{Input: in, User: body.User}
	if n := body.Dimensions; n != nil {
		if *n < 1 || *n > maxEmbedDimensions {
			d.WriteError(c, failure.BadParam("invalid_value", "dimensions", fmt.Sprintf("dimensions must be between 1 and %d, got %d", maxEmbedDimensions, *n)))
			return
		}
		req.Dimensions = *n
	}
	out, e := d.e.Embed(c, body.Model, req, "embeddings")
	if e != nil {
		d.WriteError(c, e)
		return
	}
	data := make([]gin.H, len(out.Vectors))
	for i, v := range out.Vectors {
		var emb any = v
		if body.EncodingFormat == "base64" {
			emb = base64Floats(v)
		}
		data[i] = gin.H{"object": "embedding", "index": i, "embedding": emb}
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": data, "model": body.Model,
		"usage": gin.H{"prompt_tokens": out.Usage.PromptTokens, "total_tokens": out.Usage.PromptTokens}})
}

// base64Floats encodes v as OpenAI's base64 format: little-endian float32s.
func base64Floats(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}
