package status

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestResponderFail: an Error, wrapped or not, answers with its code and
// message; any other error is a 500; each answer is counted under its
// operation and code.
func TestResponderFail(t *testing.T) {
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "requests"}, []string{"op", "code"})
	r := Responder{Requests: reqs, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, tc := range []struct {
		err  error
		code int
	}{
		{Errorf(http.StatusRequestEntityTooLarge, "value of %d bytes", 9), 413},
		{fmt.Errorf("forward: %w", Errorf(http.StatusNotFound, "file not found")), 404},
		{errors.New("disk on fire"), 500},
	} {
		w := httptest.NewRecorder()
		r.Fail(w, "put", tc.err)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.err.Error()) {
			t.Errorf("%v: answered %d %q, want %d and the message", tc.err, w.Code, w.Body.String(), tc.code)
		}
		if got := count(t, reqs, "put", fmt.Sprint(tc.code)); got != 1 {
			t.Errorf("%v: counted %v times under code %d, want once", tc.err, got, tc.code)
		}
	}
	r.OK("put", 204)
	if got := count(t, reqs, "put", "204"); got != 1 {
		t.Errorf("OK counted %v times, want once", got)
	}
}

func TestTrimNL(t *testing.T) {
	for in, want := range map[string]string{"": "", "x": "x", "bad name\n": "bad name", "a\r\n\n": "a", "\n": ""} {
		if got := string(TrimNL([]byte(in))); got != want {
			t.Errorf("TrimNL(%q) = %q, want %q", in, got, want)
		}
	}
}

func count(t *testing.T, c *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
