package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/apikeys"
	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/ledger"
	"github.com/streamgate/gateway/middleware"
)

// The admin API's keys: /admin/keys lists the config's keys and those
// made at runtime; POST makes one (its secret is in the answer, and
// nowhere else ever after), PATCH changes a runtime key's models, limits
// or admin flag, DELETE revokes it. Config keys change only in the file.

// runtimeKeyName bounds the names the admin API gives keys.
var runtimeKeyName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// maxKeyModels bounds a key's model list.
const maxKeyModels = 256

func badKey(param, format string, args ...any) *failure.Error {
	return &failure.Error{Status: http.StatusBadRequest, Type: failure.TypeInvalidRequest, Code: "invalid_request_error", Param: param, Message: fmt.Sprintf(format, args...)}
}

func keyNotFound(name string) *failure.Error {
	return &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "key_not_found", Message: "no key " + failure.Quote(name)}
}

// noRing is the answer while there is no database to keep keys in.
var noRing = &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "ledger_off",
	Message: "keys made at runtime are kept in the ledger's database: set ledger.backend to sqlite or postgres"}

// keyView is a key as the admin API shows it: never its secret.
type keyView struct {
	Name      string        `json:"name"`
	Source    string        `json:"source"` // config or runtime
	Models    []string      `json:"models"`
	Limits    config.Limits `json:"limits"`
	Admin     bool          `json:"admin"`
	CreatedAt string        `json:"created_at,omitempty"`
	UpdatedAt string        `json:"updated_at,omitempty"`
	RevokedAt string        `json:"revoked_at,omitempty"`
	// Key is the secret, in the answer to its creation only.
	Key string `json:"key,omitempty"`
}

func runtimeView(k apikeys.Key) keyView {
	v := keyView{Name: k.Name, Source: "runtime", Models: k.Models, Limits: k.Limits, Admin: k.Admin,
		CreatedAt: k.Created.Format(time.RFC3339), UpdatedAt: k.Updated.Format(time.RFC3339)}
	if !k.Revoked.IsZero() {
		v.RevokedAt = k.Revoked.Format(time.RFC3339)
	}
	if v.Models == nil {
		v.Models = []string{}
	}
	return v
}

func configView(name string, k config.Key) keyView {
	v := keyView{Name: name, Source: "config", Models: k.Models, Limits: k.Limits, Admin: k.Admin}
	if v.Models == nil {
		v.Models = []string{}
	}
	return v
}

func (g *generation) listKeys(c *gin.Context) {
	out := []keyView{}
	for name, k := range g.cfg.Keys {
		out = append(out, configView(name, k))
	}
	if g.ring != nil {
		for name, k := range g.ring.Set().All {
			if _, dup := g.cfg.Keys[name]; !dup {
				out = append(out, runtimeView(k))
			}
		}
	}
	slices.SortFunc(out, func(a, b keyView) int { return strings.Compare(a.Name, b.Name) })
	c.JSON(http.StatusOK, gin.H{"data": out})
}

func (g *generation) getKey(c *gin.Context) {
	name := c.Param("name")
	if k, ok := g.cfg.Keys[name]; ok {
		c.JSON(http.StatusOK, configView(name, k))
		return
	}
	if g.ring != nil {
		if k, ok := g.ring.Set().All[name]; ok {
			c.JSON(http.StatusOK, runtimeView(k))
			return
		}
	}
	api.WriteError(c, keyNotFound(name))
}

// keyChange is the body of POST and PATCH: a field left out is left as it
// is (PATCH) or empty (POST).
type keyChange struct {
	Name   string         `json:"name"`
	Models *[]string      `json:"models"`
	Limits *config.Limits `json:"limits"`
	Admin  *bool          `json:"admin"`
}

// decodeKeyChange reads a body strictly: an unknown field is an error, so
// that a misspelt limit is not silently no limit.
func decodeKeyChange(c *gin.Context) (keyChange, *failure.Error) {
	var ch keyChange
	d := json.NewDecoder(c.Request.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(&ch); err != nil {
		return ch, badKey("", "the body is not a key: %s", failure.Truncate(err.Error()))
	}
	if d.More() {
		return ch, badKey("", "the body holds more than one JSON value")
	}
	return ch, nil
}

// apply changes s by ch, checking what it sets.
func (g *generation) apply(s *apikeys.Settings, ch keyChange) *failure.Error {
	if ch.Models != nil {
		if len(*ch.Models) > maxKeyModels {
			return badKey("models", "a key may name at most %d models", maxKeyModels)
		}
		for i, m := range *ch.Models {
			if _, ok := g.cfg.Models[m]; !ok {
				return badKey(fmt.Sprintf("models[%d]", i), "%s is not a configured model", failure.Quote(m))
			}
		}
		s.Models = slices.Clone(*ch.Models)
	}
	if ch.Limits != nil {
		if ps := ch.Limits.Problems("limits"); len(ps) > 0 {
			return badKey(ps[0].Field, "%s", ps[0].Msg)
		}
		s.Limits = *ch.Limits
	}
	if ch.Admin != nil {
		s.Admin = *ch.Admin
	}
	return nil
}

func (g *generation) createKey(c *gin.Context) {
	if g.ring == nil {
		api.WriteError(c, noRing)
		return
	}
	ch, fe := decodeKeyChange(c)
	if fe != nil {
		api.WriteError(c, fe)
		return
	}
	if !runtimeKeyName.MatchString(ch.Name) {
		api.WriteError(c, badKey("name", "a key's name is 1 to 64 letters, digits, '_' or '-'"))
		return
	}
	if _, ok := g.cfg.Keys[ch.Name]; ok {
		api.WriteError(c, keyConflict("the config has a key "+failure.Quote(ch.Name)))
		return
	}
	var s apikeys.Settings
	if fe := g.apply(&s, ch); fe != nil {
		api.WriteError(c, fe)
		return
	}
	k, secret, err := g.ring.Create(c.Request.Context(), ch.Name, s)
	if err != nil {
		g.keyStoreError(c, ch.Name, err)
		return
	}
	g.audit(c, "key created", k)
	v := runtimeView(k)
	v.Key = secret
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, v)
}

func (g *generation) updateKey(c *gin.Context) {
	name := c.Param("name")
	if fe := g.runtimeOnly(name); fe != nil {
		api.WriteError(c, fe)
		return
	}
	ch, fe := decodeKeyChange(c)
	if fe != nil {
		api.WriteError(c, fe)
		return
	}
	if ch.Name != "" && ch.Name != name {
		api.WriteError(c, badKey("name", "a key cannot be renamed: make a new one"))
		return
	}
	k, ok := g.ring.Set().Live(name)
	if !ok {
		api.WriteError(c, keyNotFound(name))
		return
	}
	s := k.Settings
	if fe := g.apply(&s, ch); fe != nil {
		api.WriteError(c, fe)
		return
	}
	k, err := g.ring.Update(c.Request.Context(), name, s)
	if err != nil {
		g.keyStoreError(c, name, err)
		return
	}
	g.audit(c, "key updated", k)
	c.JSON(http.StatusOK, runtimeView(k))
}

func (g *generation) revokeKey(c *gin.Context) {
	name := c.Param("name")
	if fe := g.runtimeOnly(name); fe != nil {
		api.WriteError(c, fe)
		return
	}
	k, err := g.ring.Revoke(c.Request.Context(), name)
	if err != nil {
		g.keyStoreError(c, name, err)
		return
	}
	g.audit(c, "key revoked", k)
	c.JSON(http.StatusOK, runtimeView(k))
}

// runtimeOnly refuses changes to keys of the config, and any change
// without a database.
func (g *generation) runtimeOnly(name string) *failure.Error {
	if _, ok := g.cfg.Keys[name]; ok {
		return keyConflict("key " + failure.Quote(name) + " is the config's: change it in the config file")
	}
	if g.ring == nil {
		return noRing
	}
	return nil
}

// audit logs a change to a key: which, by whom (the admin key's name),
// and its settings after; never a secret.
func (g *generation) audit(c *gin.Context, what string, k apikeys.Key) {
	js, _ := json.Marshal(k.Settings)
	g.engine.Log.Info("admin: "+what, "key", k.Name, "by", middleware.Get(c).KeyName, "request_id", middleware.Get(c).RequestID, "settings", string(js))
}

func keyConflict(msg string) *failure.Error {
	return &failure.Error{Status: http.StatusConflict, Type: failure.TypeInvalidRequest, Code: "key_conflict", Message: msg}
}

func (g *generation) keyStoreError(c *gin.Context, name string, err error) {
	switch {
	case errors.Is(err, ledger.ErrKeyExists):
		api.WriteError(c, keyConflict("a key "+failure.Quote(name)+" exists (or existed: names of revoked keys are not reused)"))
	case errors.Is(err, ledger.ErrKeyNotFound):
		api.WriteError(c, keyNotFound(name))
	default:
		api.WriteError(c, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "ledger_unavailable", Message: "the key database could not be written"})
	}
}
