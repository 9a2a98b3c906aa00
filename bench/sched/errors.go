package sched

import (
	"errors"

	"github.com/tollgate-ai/tollgate/internal/apierr"
)

func asAPIError(err error) *apierr.Error {
	var e *apierr.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
