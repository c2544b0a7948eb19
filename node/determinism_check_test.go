package node

// The checker of the deterministic core's rules (DESIGN.md section 3): no
// goroutines, channels, select, wall clock, sleeping, global or crypto
// randomness, sync waits or I/O, and no ranging over a map unless the line
// says why its order cannot reach an output ("// determinism: <reason>").
// It lives in test files so that it adds nothing to the core itself.

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Annotation marks a line the checker accepts, followed by the reason.
const Annotation = "// determinism:"

// forbiddenImports are packages the core must not import at all.
var forbiddenImports = map[string]string{
	"crypto/rand": "system randomness: take a seeded source from the environment",
	"sync":        "the core is single-threaded: no locks or waits",
	"os":          "the core does no I/O: go through an interface",
	"net":         "the core does no I/O: go through an interface",
	"net/http":    "the core does no I/O: go through an interface",
	"os/exec":     "the core does no I/O",
}

// forbiddenTimeCalls read or wait on the wall clock.
var forbiddenTimeCalls = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true, "AfterFunc": true,
	"Tick": true, "NewTimer": true, "NewTicker": true,
}

// randPackages are the packages of pseudo-randomness: a seeded generator
// made by one of seededConstructors is allowed, their global functions not.
var randPackages = map[string]bool{"math/rand": true, "math/rand/v2": true}

var seededConstructors = map[string]bool{
	"New": true, "NewSource": true, "NewPCG": true, "NewChaCha8": true, "NewZipf": true,
}

// Violation is one break of the rules.
type Violation struct {
	Position token.Position
	Message  string
}

func (v Violation) String() string { return fmt.Sprintf("%s: %s", v.Position, v.Message) }

// CheckDir type-checks the non-test Go files of one package directory and
// returns every violation, sorted by position.
func CheckDir(dir string) ([]Violation, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		// Files of the default build only (not the plantedbugs build).
		if match, err := build.Default.MatchFile(dir, name); err != nil || !match {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, nil
	}
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}, Uses: map[*ast.Ident]types.Object{}}
	imp, err := exportDataImporter(fset, dir)
	if err != nil {
		return nil, err
	}
	conf := types.Config{Importer: imp}
	if _, err := conf.Check(files[0].Name.Name, fset, files, info); err != nil {
		return nil, fmt.Errorf("type-checking %s: %w", dir, err)
	}
	var out []Violation
	for _, f := range files {
		out = append(out, checkFile(fset, f, info)...)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Position, out[j].Position
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Line < b.Line
	})
	return out, nil
}

func checkFile(fset *token.FileSet, f *ast.File, info *types.Info) []Violation {
	annotated := map[int]bool{}
	for _, group := range f.Comments {
		for _, c := range group.List {
			if strings.HasPrefix(c.Text, Annotation) && len(strings.TrimSpace(strings.TrimPrefix(c.Text, Annotation))) > 0 {
				annotated[fset.Position(c.Slash).Line] = true
			}
		}
	}
	var out []Violation
	report := func(pos token.Pos, format string, args ...any) {
		p := fset.Position(pos)
		if annotated[p.Line] {
			return
		}
		out = append(out, Violation{Position: p, Message: fmt.Sprintf(format, args...)})
	}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if why, ok := forbiddenImports[path]; ok {
			report(imp.Pos(), "imports %q: %s", path, why)
		}
		if randPackages[path] && imp.Name != nil && imp.Name.Name == "." {
			report(imp.Pos(), "dot-imports %q: its global functions would hide from this checker", path)
		}
	}
	// A generator at package level outlives a run: its state carries from
	// one simulation (or one node) to the next in the same process.
	for _, decl := range f.Decls {
		if gen, ok := decl.(*ast.GenDecl); ok && gen.Tok == token.VAR {
			ast.Inspect(gen, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok {
					if obj, ok := info.Uses[id]; ok && obj.Pkg() != nil && randPackages[obj.Pkg().Path()] {
						if _, isFunc := obj.(*types.Func); isFunc {
							report(id.Pos(), "a package-level generator (rand.%s): its state outlives a run; take the seeded source from the environment", obj.Name())
						}
					}
				}
				return true
			})
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			report(n.Pos(), "starts a goroutine: the core is driven, it never runs on its own")
		case *ast.SelectStmt:
			report(n.Pos(), "select: the core does not wait")
		case *ast.SendStmt:
			report(n.Pos(), "channel send: outputs go through interfaces")
		case *ast.ChanType:
			report(n.Pos(), "channel type: outputs go through interfaces")
		case *ast.UnaryExpr:
			if n.Op == token.ARROW {
				report(n.Pos(), "channel receive: inputs come in through methods")
			}
		case *ast.SelectorExpr:
			obj, ok := info.Uses[n.Sel]
			if !ok || obj.Pkg() == nil {
				break
			}
			// Every use of a forbidden package is a violation of its own,
			// so that one annotated import does not open the whole file.
			if why, ok := forbiddenImports[obj.Pkg().Path()]; ok {
				report(n.Pos(), "uses %s.%s: %s", obj.Pkg().Name(), obj.Name(), why)
			}
			fn, isFunc := obj.(*types.Func)
			global := isFunc && fn.Signature().Recv() == nil
			if global && obj.Pkg().Path() == "time" && forbiddenTimeCalls[obj.Name()] {
				report(n.Pos(), "time.%s reads or waits on the wall clock: time comes in as ticks or from a Clock", obj.Name())
			}
			if global && randPackages[obj.Pkg().Path()] && !seededConstructors[obj.Name()] {
				report(n.Pos(), "rand.%s draws global randomness: take a seeded source from the environment", obj.Name())
			}
		case *ast.RangeStmt:
			if t, ok := info.Types[n.X]; ok {
				if _, isMap := t.Type.Underlying().(*types.Map); isMap {
					report(n.Pos(), "ranges over a map: sort the keys, or say on this line why order cannot matter (%s <reason>)", Annotation)
				}
			}
		}
		return true
	})
	return out
}

// exportDataImporter imports packages from the compiler's export data, which
// `go list -export` produces from the build cache: type-checking from source
// would re-check Raft, Pebble and protobuf on every run.
func exportDataImporter(fset *token.FileSet, dir string) (types.Importer, error) {
	cmd := exec.Command("go", "list", "-deps", "-export", "-f", "{{.ImportPath}}\t{{.Export}}", ".")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if exit, ok := err.(*exec.ExitError); ok {
			stderr = exit.Stderr
		}
		return nil, fmt.Errorf("go list -export in %s: %v: %s", dir, err, stderr)
	}
	exports := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, file, ok := strings.Cut(line, "\t")
		if ok && file != "" {
			exports[path] = file
		}
	}
	return importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %q", path)
		}
		return os.Open(file)
	}), nil
}
