// Package web is the pages the gateway serves: the playground at / and
// the usage page at /admin, plain HTML, CSS and JavaScript embedded in
// the binary, no build step.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files are the pages' files: index.html, app.css, app.js (the
// playground), admin.html, admin.css, admin.js (the usage page).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}
