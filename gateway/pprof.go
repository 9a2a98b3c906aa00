package gateway

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"
)

// pprof serves the runtime profiles (Config.Pprof) to admin keys:
// /debug/pprof (index), /debug/pprof/{heap,goroutine,allocs,...},
// /debug/pprof/profile?seconds=N (CPU), /debug/pprof/trace.
func (s *Server) pprof(rc *fasthttp.RequestCtx) error {
	if err := s.authenticateAdmin(rc); err != nil {
		return err
	}
	pprofhandler.PprofHandler(rc)
	return nil
}
