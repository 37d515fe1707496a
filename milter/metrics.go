package milter

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	accepted, tempfailed, rejected prometheus.Counter
	discarded                      prometheus.Counter
	bytes                          prometheus.Counter
	ingestSeconds                  prometheus.Observer
	connections                    prometheus.Gauge
	refused                        prometheus.Counter
	overBudget                     prometheus.Counter
	bytesInFlight                  prometheus.Gauge
}

// newMetrics builds the collectors and registers them on reg when non-nil.
// A collector already registered (a second Serve on the same registry) is
// reused, so both listeners count into the same series.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "messages_total",
		Help: "Messages at end of data, by outcome: accepted (stored), tempfailed (451, sender retries), rejected (552, too big), over_budget (451 4.3.2, milter.max_bytes_in_flight reached).",
	}, []string{"outcome"})
	bytes := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "accepted_bytes_total",
		Help: "Raw bytes (header and body as received) of accepted messages.",
	})
	discarded := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "discarded_total",
		Help: "Accepted messages stored for every recipient whose Postfix copy was dropped (DISCARD, milter.discard_stored).",
	})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "ingest_duration_seconds",
		Help:    "Time to store one message (Ingest call), whatever the outcome.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1ms to ~60s
	})
	conns := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "connections",
		Help: "Open milter connections (one per Postfix SMTP session).",
	})
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "connections_refused_total",
		Help: "Connections closed at once because milter.max_connections were open (Postfix applies milter_default_action).",
	})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caliopen", Subsystem: "milter", Name: "bytes_in_flight",
		Help: "Bytes of the memory budget (milter.max_bytes_in_flight) held by messages being received or stored.",
	})
	if reg != nil {
		var err error
		if inFlight, err = register(reg, inFlight); err != nil {
			return nil, err
		}
		if refused, err = register(reg, refused); err != nil {
			return nil, err
		}
		if messages, err = register(reg, messages); err != nil {
			return nil, err
		}
		if bytes, err = register(reg, bytes); err != nil {
			return nil, err
		}
		if discarded, err = register(reg, discarded); err != nil {
			return nil, err
		}
		if latency, err = register(reg, latency); err != nil {
			return nil, err
		}
		if conns, err = register(reg, conns); err != nil {
			return nil, err
		}
	}
	return &metrics{
		accepted:      messages.WithLabelValues("accepted"),
		tempfailed:    messages.WithLabelValues("tempfailed"),
		rejected:      messages.WithLabelValues("rejected"),
		discarded:     discarded,
		bytes:         bytes,
		ingestSeconds: latency,
		connections:   conns,
		refused:       refused,
		overBudget:    messages.WithLabelValues("over_budget"),
		bytesInFlight: inFlight,
	}, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("milter: register metrics: %w", err)
}
