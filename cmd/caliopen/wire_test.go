package main

import (
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/caliopen/caliopen/api"
	"github.com/caliopen/caliopen/internal/config"
)

// Every setting of api.Config comes from a key of the api section: set each
// key to a value that is not its default and find it in the API's Config.
func TestAPIConfigFromTOML(t *testing.T) {
	cfg, err := config.Load("", nil, []string{
		"api.token_ttl=100h", "api.token_idle=5h", "api.max_body=3MB", "api.outbound_authenticated=true",
		"api.login.user_burst=7", "api.login.user_interval=2m", "api.login.addr_burst=9", "api.login.addr_interval=11s",
		"api.login.max_concurrent=2", "api.send.burst=150", "api.send.interval=1m",
		"api.events.heartbeat=13s", "api.events.max_streams_per_user=3", "api.events.max_streams=40",
		"api.submission.helo_name=mx.example.org", "api.submission.timeout=17s",
		"api.trusted_proxies=10.0.0.0/8, 2001:db8::1",
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	got, err := a.apiConfig(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := api.Config{
		Logger: got.Logger, Sender: got.Sender,
		TokenTTL: 100 * time.Hour, TokenIdle: 5 * time.Hour, MaxBody: 3 << 20, OutboundAuthenticated: true,
		LoginUserBurst: 7, LoginUserInterval: 2 * time.Minute, LoginAddrBurst: 9, LoginAddrInterval: 11 * time.Second,
		MaxConcurrentLogins: 2, SendBurst: 150, SendInterval: time.Minute,
		Heartbeat: 13 * time.Second, MaxStreamsPerUser: 3, MaxStreams: 40,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("api.Config from the configuration:\n got %+v\nwant %+v", got, want)
	}
	// A setting added to api.Config must be wired too: none is left zero.
	v := reflect.ValueOf(got)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		switch k := f.Type.Kind(); {
		case !f.IsExported(), k == reflect.Interface, k == reflect.Pointer, k == reflect.Func:
			continue // dependencies, not settings
		}
		if v.Field(i).IsZero() {
			t.Errorf("api.Config.%s is not set from any configuration key", f.Name)
		}
	}
	snd := reflect.ValueOf(got.Sender).Elem().FieldByName("cfg")
	if snd.FieldByName("LocalName").String() != "mx.example.org" || snd.FieldByName("Timeout").Int() != int64(17*time.Second) {
		t.Errorf("submission settings not wired: %+v", snd)
	}
}
