// Package web is the playground the gateway serves at /: plain HTML, CSS
// and JavaScript embedded in the binary, no build step.
package web

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files are the playground's files: index.html, app.css, app.js.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}
