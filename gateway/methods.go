package gateway

import "strings"

// routeMethods lists each route's methods for 405 answers; a prefix entry
// (ending in "/") covers the paths under it. Keep it beside Server.route.
var routeMethods = []struct{ path, allow string }{
	{"/", "GET, HEAD"},
	{"/metrics", "GET, HEAD"},
	{"/v1/chat/completions", "POST"},
	{"/v1/completions", "POST"},
	{"/v1/embeddings", "POST"},
	{"/v1/responses", "POST"},
	{"/v1/responses/", "GET, HEAD, DELETE"},
	{"/v1/models", "GET, HEAD"},
	{"/v1/models/", "GET, HEAD"},
	{"/v1/workers", "GET, HEAD"},
	{"/v1/workers/", "POST"},
	{"/v1/admin/models", "POST"},
	{"/v1/admin/revoke", "POST"},
	{"/v1/admin/disputes", "GET, HEAD"},
	{"/v1/admin/reinstate", "POST"},
	{"/v1/zk/registry", "GET, HEAD"},
	{"/v1/receipts", "GET, HEAD"},
	{"/v1/receipts/", "GET, HEAD"},
	{"/v1/zk/keys/", "GET, HEAD"},
}

// allowFor is the Allow header for a known route's path, "" for an unknown
// path.
func allowFor(path string) string {
	for _, r := range routeMethods {
		if path == r.path || r.path != "/" && strings.HasSuffix(r.path, "/") && strings.HasPrefix(path, r.path) && len(path) > len(r.path) {
			return r.allow
		}
	}
	return ""
}
