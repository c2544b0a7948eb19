package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// restRoute is one REST binding of a method (a google.api.http rule):
// its HTTP method, its path template split at '/' ("" stands for a
// {variable} segment), and the message its query parameters fill.
type restRoute struct {
	method   string
	segments []string
	input    protoreflect.MessageDescriptor
}

// restRoutes lists the REST bindings of every method of the services the
// files declare.
func restRoutes(files ...protoreflect.FileDescriptor) []restRoute {
	var routes []restRoute
	for _, file := range files {
		services := file.Services()
		for i := range services.Len() {
			methods := services.Get(i).Methods()
			for j := range methods.Len() {
				m := methods.Get(j)
				rule, ok := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				if !ok || rule == nil {
					continue
				}
				for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
					if route, ok := newRESTRoute(r, m.Input()); ok {
						routes = append(routes, route)
					}
				}
			}
		}
	}
	return routes
}

func newRESTRoute(rule *annotations.HttpRule, input protoreflect.MessageDescriptor) (restRoute, bool) {
	var method, path string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		method, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		method, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Delete:
		method, path = http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		method, path = http.MethodPatch, p.Patch
	default:
		return restRoute{}, false
	}
	segments := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segments {
		if strings.HasPrefix(s, "{") {
			if strings.Contains(s, "=") {
				panic(fmt.Sprintf("rpc: REST path %s: only single-segment variables are checked", path))
			}
			segments[i] = ""
		}
	}
	return restRoute{method: method, segments: segments, input: input}, true
}

func (r restRoute) matches(method string, segments []string) bool {
	if r.method != method || len(r.segments) != len(segments) {
		return false
	}
	for i, s := range r.segments {
		if s != "" && s != segments[i] {
			return false
		}
	}
	return true
}

// checkQueryParameters refuses, with HTTP 400, a REST request whose query
// names no field of its method's request message. The transcoder answers
// such a request 500 Internal Server Error, which blames the server for a
// client's typo (found by review). Requests to no known route pass on:
// the transcoder answers those 404 or 405.
func checkQueryParameters(routes []restRoute, refused func(httpStatus int), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "" {
			next.ServeHTTP(w, r)
			return
		}
		segments := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		for _, route := range routes {
			if !route.matches(r.Method, segments) {
				continue
			}
			for name := range r.URL.Query() {
				if !namesField(route.input, name) {
					writeRESTError(w, refused, http.StatusBadRequest, codeInvalidArgument,
						fmt.Sprintf("unknown query parameter %q for %s %s; known parameters: %s",
							name, r.Method, r.URL.Path, strings.Join(queryFieldNames(route.input), ", ")))
					return
				}
			}
			break
		}
		next.ServeHTTP(w, r)
	})
}

// namesField says whether a query parameter's first path element names a
// field of msg, by its proto or its JSON name (vanguard takes both).
func namesField(msg protoreflect.MessageDescriptor, param string) bool {
	first, _, _ := strings.Cut(param, ".")
	fields := msg.Fields()
	return fields.ByName(protoreflect.Name(first)) != nil || fields.ByJSONName(first) != nil
}

func queryFieldNames(msg protoreflect.MessageDescriptor) []string {
	fields := msg.Fields()
	names := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		names = append(names, fields.Get(i).JSONName())
	}
	if len(names) == 0 {
		return []string{"(none)"}
	}
	slices.Sort(names)
	return names
}

// Cluster views: GET /api/v1/metadata/cluster answers in this service's
// shape (GetClusterMetadata) or the seed's (GetSeedClusterMetadata, also
// at its own path), chosen by ?view=, else by the controller's default.
const (
	clusterPath     = "/api/v1/metadata/cluster"
	seedClusterPath = "/api/v1/metadata/cluster/seed"
	viewParameter   = "view"
	viewDMQ         = "dmq"
	viewSeed        = "seed"
)

// chooseClusterView routes GET /api/v1/metadata/cluster to the view asked
// for (?view=dmq or ?view=seed), or to the default (seed when seedDefault):
// the seed's storage services call the path unchanged and parse its shape,
// while this service's REST clients keep theirs. Any other value is 400.
func chooseClusterView(seedDefault bool, refused func(int), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != clusterPath || r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		query := r.URL.Query()
		seed := seedDefault
		if views, ok := query[viewParameter]; ok {
			switch {
			case len(views) == 1 && views[0] == viewDMQ:
				seed = false
			case len(views) == 1 && views[0] == viewSeed:
				seed = true
			default:
				writeRESTError(w, refused, http.StatusBadRequest, codeInvalidArgument,
					fmt.Sprintf("view=%s: want %s (this service's shape) or %s (the Java service's)",
						strings.Join(views, ","), viewDMQ, viewSeed))
				return
			}
			query.Del(viewParameter)
		}
		routed := r.Clone(r.Context())
		routed.URL.RawQuery = query.Encode()
		if seed {
			routed.URL.Path, routed.URL.RawPath = seedClusterPath, ""
		}
		next.ServeHTTP(w, routed)
	})
}
