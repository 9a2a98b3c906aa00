package main

import "github.com/tollgate-ai/tollgate/workers"

// knownModels lists the registrar's allowed model names (configuration
// and POST /v1/admin/models) for the gateway's restart warm-up.
func knownModels(r *workers.Registrar) func() []string {
	return func() []string {
		ms := r.AllowedModels()
		out := make([]string, len(ms))
		for i, m := range ms {
			out[i] = m.Name
		}
		return out
	}
}
