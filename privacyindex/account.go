package privacyindex

import (
	"math"
	"strconv"
)

// Private key custody (AccountSetup.KeyCustody), as store.AccountSetup spells it.
const (
	CustodyDevice = "device" // on the user's devices only
	CustodyServer = "server" // on the server: search and decryption work there, but the host can read
)

// Account advice action codes.
const (
	ActKeepKeyOnDevices = "keep_key_on_devices"
	ActPublishKey       = "publish_key"
	ActSecondFactor     = "enable_second_factor"
	ActStrongerPassword = "stronger_password"
	ActDomainPolicy     = "domain_inbound_policy"
)

// AccountSetup is the account's security set-up.
type AccountSetup struct {
	HasKeyPair bool `json:"has_key_pair"`
	// KeyCustody is CustodyDevice or CustodyServer; it counts only with a key pair.
	KeyCustody string `json:"key_custody"`
	// KeyPublished: Autocrypt header on outgoing mail, and DNS OPENPGPKEY or
	// WKD. Counts only with a key pair.
	KeyPublished bool `json:"key_published"`
	SecondFactor bool `json:"second_factor"`
	// PasswordStrength is a 0–4 estimate (zxcvbn scale); out of range is clamped.
	PasswordStrength int `json:"password_strength"`
	// DomainPolicy: the user's domain enforces MTA-STS or DANE for inbound mail.
	DomainPolicy bool `json:"domain_policy"`
}

// ContactTraffic is one contact's observed PI and the number of messages
// exchanged with it in the 90 days before now (the caller counts them).
type ContactTraffic struct {
	ID       string `json:"id"`
	Observed int    `json:"observed"`
	Messages int    `json:"messages"`
}

// AccountInput is what the account PI is computed from.
type AccountInput struct {
	Setup    AccountSetup     `json:"setup"`
	Contacts []ContactTraffic `json:"contacts"`
}

// AccountResult is the account's PI. Advice gains are in account points.
type AccountResult struct {
	Version int    `json:"version"`
	Score   int    `json:"score"`
	Band    string `json:"band"`
	// Setup is the set-up score (0–100); Traffic the traffic-weighted mean
	// of contacts' observed PI, meaningful only when HasTraffic.
	Setup      float64  `json:"setup"`
	Traffic    float64  `json:"traffic"`
	HasTraffic bool     `json:"has_traffic"`
	Facts      []Fact   `json:"facts"`
	Advice     []Advice `json:"advice"`
}

// setupHalves returns each set-up fact in half points (password strength is
// worth 2.5 a step), so that the arithmetic stays exact in integers.
func setupHalves(s AccountSetup) (keyPair, custody, published, second, password, domain int) {
	if s.HasKeyPair {
		keyPair = 40
		switch s.KeyCustody {
		case CustodyDevice:
			custody = 50
		case CustodyServer:
			custody = 20
		}
		if s.KeyPublished {
			published = 30
		}
	}
	if s.SecondFactor {
		second = 40
	}
	password = clamp(s.PasswordStrength, 0, 4) * 5
	if s.DomainPolicy {
		domain = 20
	}
	return
}

func setupTotalHalves(s AccountSetup) int {
	a, b, c, d, e, f := setupHalves(s)
	return a + b + c + d + e + f
}

// accountScore is 0.6 × traffic + 0.4 × set-up, or set-up alone without
// traffic, rounded half up — computed in integers so that a gain of 15 set-up
// points is exactly 6 account points whatever the traffic.
func accountScore(in AccountInput) (score int, traffic float64, hasTraffic bool) {
	var wsum, wo int64
	for _, c := range in.Contacts {
		if c.Messages <= 0 {
			continue
		}
		wsum += int64(c.Messages)
		wo += int64(c.Messages) * int64(clamp(c.Observed, 0, 100))
	}
	s2 := int64(setupTotalHalves(in.Setup))
	if wsum == 0 {
		return int((s2 + 1) / 2), 0, false
	}
	num := 6*wo + 2*s2*wsum // (0.6·wo/W + 0.4·s2/2) · 10W
	den := 10 * wsum
	return int((2*num + den) / (2 * den)), float64(wo) / float64(wsum), true
}

// Account computes the account's PI.
func Account(in AccountInput) AccountResult {
	score, traffic, has := accountScore(in)
	s := in.Setup
	kp, cu, pub, sf, pw, dom := setupHalves(s)
	r := AccountResult{
		Version:    Version,
		Score:      score,
		Band:       BandOf(score),
		Setup:      float64(setupTotalHalves(s)) / 2,
		Traffic:    math.Round(traffic*100) / 100,
		HasTraffic: has,
	}
	custodyLabel := "no private key"
	switch {
	case s.HasKeyPair && s.KeyCustody == CustodyDevice:
		custodyLabel = "private key on your devices only"
	case s.HasKeyPair && s.KeyCustody == CustodyServer:
		custodyLabel = "private key on the server: the host can read your encrypted mail"
	case s.HasKeyPair:
		custodyLabel = "private key custody unknown"
	}
	r.Facts = []Fact{
		{ID: "key_pair", Label: yesNo(s.HasKeyPair, "you have an OpenPGP key pair", "no OpenPGP key pair"), Points: float64(kp) / 2, Max: 20},
		{ID: "key_custody", Label: custodyLabel, Points: float64(cu) / 2, Max: 25},
		{ID: "key_published", Label: yesNo(pub > 0, "public key published (Autocrypt, and OPENPGPKEY or WKD)", "public key not published"), Points: float64(pub) / 2, Max: 15},
		{ID: "second_factor", Label: yesNo(s.SecondFactor, "second factor enabled", "no second factor"), Points: float64(sf) / 2, Max: 20},
		{ID: "password", Label: "password strength " + strconv.Itoa(clamp(s.PasswordStrength, 0, 4)) + " of 4", Points: float64(pw) / 2, Max: 10},
		{ID: "domain_policy", Label: yesNo(s.DomainPolicy, "your domain enforces MTA-STS or DANE for inbound mail", "your domain does not enforce MTA-STS or DANE for inbound mail"), Points: float64(dom) / 2, Max: 10},
	}
	if has {
		r.Facts = append(r.Facts,
			Fact{ID: "setup", Label: "set-up score, weighted 0.4", Points: r.Setup, Max: 100},
			Fact{ID: "traffic", Label: "contacts' observed PI over 90 days, weighted by messages exchanged, weighted 0.6", Points: r.Traffic, Max: 100})
	} else {
		r.Facts = append(r.Facts, Fact{ID: "setup", Label: "set-up score (no traffic yet: the whole score)", Points: r.Setup, Max: 100})
	}
	r.Advice = accountAdvice(in, score)
	return r
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

func accountAdvice(in AccountInput, score int) []Advice {
	out := []Advice{}
	try := func(action, text string, change func(*AccountSetup)) {
		g := in
		change(&g.Setup)
		if s, _, _ := accountScore(g); s > score {
			out = append(out, Advice{Action: action, Text: text, Gain: s - score})
		}
	}
	s := in.Setup
	if !s.HasKeyPair {
		try(ActCreateKey, "Create an OpenPGP key pair, kept on your devices.",
			func(g *AccountSetup) { g.HasKeyPair, g.KeyCustody = true, CustodyDevice })
	} else if s.KeyCustody != CustodyDevice {
		try(ActKeepKeyOnDevices, "Keep the private key on your devices only: server-side search and decryption stop, and the host can no longer read your mail.",
			func(g *AccountSetup) { g.KeyCustody = CustodyDevice })
	}
	if s.HasKeyPair && !s.KeyPublished {
		try(ActPublishKey, "Publish your public key: Autocrypt header on outgoing mail, and OPENPGPKEY in DNS or WKD.",
			func(g *AccountSetup) { g.KeyPublished = true })
	}
	if !s.SecondFactor {
		try(ActSecondFactor, "Enable a second factor for signing in.",
			func(g *AccountSetup) { g.SecondFactor = true })
	}
	if s.PasswordStrength < 4 {
		try(ActStrongerPassword, "Use a stronger password (a long passphrase).",
			func(g *AccountSetup) { g.PasswordStrength = 4 })
	}
	if !s.DomainPolicy {
		try(ActDomainPolicy, "Ask your administrator to enforce MTA-STS or DANE for your domain's inbound mail.",
			func(g *AccountSetup) { g.DomainPolicy = true })
	}
	sortAdvice(out)
	return out
}
