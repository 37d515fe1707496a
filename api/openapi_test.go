package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var pathParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestOpenAPICoversRoutes keeps the document true: every route is
// documented, and every documented operation has a route.
func TestOpenAPICoversRoutes(t *testing.T) {
	h := newHarness(t)
	rec := h.do(http.MethodGet, "/api/v1/openapi.json", "", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET openapi.json: %d", rec.Code)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
		Comps   struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
	}

	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	routed := map[string]bool{}
	for _, r := range h.srv.Echo().Routes() {
		// Echo's own catch-alls for group middleware are not API routes.
		if !strings.HasPrefix(r.Path, Prefix+"/") || strings.HasSuffix(r.Path, "*") || !slices.Contains(httpMethods, r.Method) {
			continue
		}
		key := r.Method + " " + pathParam.ReplaceAllString(strings.TrimPrefix(r.Path, Prefix), "{$1}")
		routed[key] = true
		if !documented[key] {
			t.Errorf("route %s is not documented in openapi.json", key)
		}
	}
	for k := range documented {
		if !routed[k] {
			t.Errorf("openapi.json documents %s, which has no route", k)
		}
	}
	if len(routed) < 25 {
		t.Fatalf("only %d routes seen: the walk is broken", len(routed))
	}

	// Every $ref resolves.
	for _, ref := range regexp.MustCompile(`"#/components/schemas/([A-Za-z]+)"`).FindAllStringSubmatch(rec.Body.String(), -1) {
		if _, ok := doc.Comps.Schemas[ref[1]]; !ok {
			t.Errorf("dangling $ref %s", ref[1])
		}
	}
}

var httpMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
