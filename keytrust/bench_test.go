package keytrust

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/caliopen/caliopen/ingest"
	"github.com/caliopen/caliopen/verify"
)

// mapDNS answers from fixed records, in memory: the profile is of the
// delivery path, not of a resolver (production caches answers anyway).
type mapDNS map[string][]string

func (d mapDNS) LookupTXT(_ context.Context, n string) ([]string, error) {
	if r, ok := d[strings.TrimSuffix(strings.ToLower(n), ".")]; ok {
		return r, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
}
func (mapDNS) LookupMX(_ context.Context, n string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
}
func (mapDNS) LookupIPAddr(_ context.Context, n string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
}
func (mapDNS) LookupAddr(_ context.Context, n string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
}

var deliveryProfile = flag.String("deliverymix.cpuprofile", "",
	"write a CPU profile of BenchmarkDeliveryMix's deliveries alone (no key generation nor signing) to this file")

// BenchmarkDeliveryMix is the delivery path as the milter drives it, with
// verification on: ingest with this Verifier on the embedded store (fsync
// on), 10 concurrent callers, 2–200 KB messages (log-uniform) from 60
// correspondents drawn with a skew (a few write often, so their history
// and contacts are reused), at 20 sender domains publishing SPF and DMARC,
// 12 of them signing with RSA-2048 DKIM. Run it with a CPU profile of the
// deliveries:
//
//	go test -c -o /tmp/kt.test ./keytrust/
//	/tmp/kt.test -test.run '^$' -test.bench DeliveryMix -test.benchtime 1000x -deliverymix.cpuprofile /tmp/cpu.prof
//	go tool pprof -top /tmp/kt.test /tmp/cpu.prof
func BenchmarkDeliveryMix(b *testing.B) {
	const domains, senders, signing = 20, 60, 12
	dns := mapDNS{}
	keys := make([]*rsa.PrivateKey, signing)
	for d := range domains {
		name := fmt.Sprintf("d%d.example.net", d)
		dns[name] = []string{"v=spf1 ip4:192.0.2.0/24 -all"}
		dns["_dmarc."+name] = []string{"v=DMARC1; p=" + []string{"none", "quarantine", "reject"}[d%3]}
		if d < signing {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				b.Fatal(err)
			}
			der, err := x509.MarshalPKIXPublicKey(k.Public())
			if err != nil {
				b.Fatal(err)
			}
			dns["sel._domainkey."+name] = []string{"v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
			keys[d] = k
		}
	}
	msgs := make([][]byte, b.N)
	from := make([]string, b.N) // envelope sender's domain
	for i := range msgs {
		rng := mrand.New(mrand.NewPCG(uint64(i), 3))
		s := int(float64(senders) * math.Pow(rng.Float64(), 3)) // skewed towards the first senders
		d := s % domains
		from[i] = fmt.Sprintf("d%d.example.net", d)
		size := int(2048 * math.Pow(100, rng.Float64()))
		var m bytes.Buffer
		fmt.Fprintf(&m, "From: Sender %d <s%d@d%d.example.net>\r\nTo: alice@example.org\r\nSubject: bench %d\r\n"+
			"Message-ID: <bench%d@d%d.example.net>\r\nDate: Thu, 26 Nov 2026 06:00:00 +0000\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: text/plain; charset=utf-8\r\n\r\n", s, s, d, i, i, d)
		line := strings.Repeat("abcdefghij", 7) + "\r\n"
		for m.Len() < size {
			m.WriteString(line)
		}
		raw := m.Bytes()
		if d < signing {
			var out bytes.Buffer
			if err := dkim.Sign(&out, bytes.NewReader(raw), &dkim.SignOptions{Domain: from[i], Selector: "sel", Signer: keys[d]}); err != nil {
				b.Fatal(err)
			}
			raw = out.Bytes()
		}
		msgs[i] = raw
	}

	v, err := verify.New(verify.Config{Resolver: dns, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	_, _, in := deliveryPath(b, v)
	ctx := context.Background()
	var next, passed atomic.Int64
	b.SetParallelism(5) // 10 callers on 2 cores
	if *deliveryProfile != "" {
		pf, err := os.Create(*deliveryProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			env := ingest.Envelope{Recipients: []string{"alice@example.org"}, TLSVersion: "TLSv1.3",
				MailFrom:   "bounce@" + from[i],
				ClientAddr: "192.0.2.7", Helo: "mx.example.net"}
			r, err := in.Ingest(ctx, env, msgs[i])
			if err != nil {
				b.Error(err)
				return
			}
			if len(r.Deliveries) == 1 && !r.Deliveries[0].Pending {
				passed.Add(1)
			}
		}
	})
	b.StopTimer()
	if passed.Load() != int64(b.N) {
		b.Errorf("%d of %d messages were delivered with every check complete", passed.Load(), b.N)
	}
}
