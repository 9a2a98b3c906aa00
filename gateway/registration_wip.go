package gateway

// TEMPORARY until workers.Registrar lands; replaced by registration.go.

import (
	"github.com/tollgate-ai/tollgate/internal/apierr"
	"github.com/valyala/fasthttp"
)

type WorkerRegistry interface{}
type Registrar interface{}

func (s *Server) workerRoute(rc *fasthttp.RequestCtx, reqID, op string) error {
	return apierr.NotFound("", "registration_disabled", "Worker registration is not enabled on this gateway.")
}

func (s *Server) allowModel(rc *fasthttp.RequestCtx) error {
	return apierr.NotFound("", "registration_disabled", "Worker registration is not enabled on this gateway.")
}
