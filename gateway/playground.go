package gateway

import (
	"io/fs"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/web"
)

// playgroundCSP lets the page load only its own files and talk only to
// this gateway.
const playgroundCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// servePages serves the usage page at /admin, the playground at / when
// playground is set, and their files under /static/. The pages hold no
// data: the usage page asks for an admin key and fetches with it.
func servePages(e *gin.Engine, playground bool) {
	files := web.Files()
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		panic(err) // embedded at build time
	}
	admin, err := fs.ReadFile(files, "admin.html")
	if err != nil {
		panic(err)
	}
	static := http.StripPrefix("/static/", http.FileServer(http.FS(files)))
	secure := func(c *gin.Context) {
		h := c.Writer.Header()
		h.Set("Content-Security-Policy", playgroundCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
	}
	if playground {
		e.GET("/", func(c *gin.Context) {
			secure(c)
			c.Data(http.StatusOK, "text/html; charset=utf-8", index)
		})
	}
	e.GET("/admin", func(c *gin.Context) {
		secure(c)
		c.Data(http.StatusOK, "text/html; charset=utf-8", admin)
	})
	e.GET("/static/*file", func(c *gin.Context) {
		secure(c)
		c.Header("Cache-Control", "no-cache")
		static.ServeHTTP(c.Writer, c.Request)
	})
}
