// Package docs holds the project's documents and the test that keeps
// docs/ARCHITECTURE.md true: every function, method or type it cites, in
// the form `path/file.go` `Name` (or `Type.Method`), must be declared in
// that file.
package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// citation is a Go file and a symbol declared in it, cited side by side.
var citation = regexp.MustCompile("`([\\w./-]+\\.go)` `([\\w.]+)`")

func TestArchitectureCitesOnlyWhatExists(t *testing.T) {
	doc, err := os.ReadFile("ARCHITECTURE.md")
	require.NoError(t, err)
	matches := citation.FindAllStringSubmatch(string(doc), -1)
	require.Greater(t, len(matches), 30, "the document cites its hops as `file.go` `Symbol`")
	declared := map[string]map[string]bool{}
	for _, m := range matches {
		file, symbol := m[1], m[2]
		names, ok := declared[file]
		if !ok {
			names = declarations(t, filepath.Join("..", file))
			declared[file] = names
		}
		require.True(t, names[symbol], "ARCHITECTURE.md cites %s in %s, which does not declare it", symbol, file)
	}
}

// declarations are the names a Go file declares: functions, Type.Method
// for methods, types, variables and constants.
func declarations(t *testing.T, path string) map[string]bool {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	require.NoError(t, err, "ARCHITECTURE.md cites a file that does not parse or exist")
	names := map[string]bool{}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				names[d.Name.Name] = true
				continue
			}
			typ := d.Recv.List[0].Type
			if star, ok := typ.(*ast.StarExpr); ok {
				typ = star.X
			}
			if index, ok := typ.(*ast.IndexExpr); ok { // a generic receiver
				typ = index.X
			}
			if ident, ok := typ.(*ast.Ident); ok {
				names[ident.Name+"."+d.Name.Name] = true
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					names[s.Name.Name] = true
				case *ast.ValueSpec:
					for _, n := range s.Names {
						names[n.Name] = true
					}
				}
			}
		}
	}
	require.NotEmpty(t, names, "%s declares nothing", strings.TrimPrefix(path, "../"))
	return names
}
