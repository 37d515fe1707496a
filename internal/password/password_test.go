package password

import (
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("unexpected PHC prefix: %s", h)
	}
	if ok, err := Verify(h, "correct horse battery staple"); err != nil || !ok {
		t.Fatalf("Verify(right) = %v, %v", ok, err)
	}
	if ok, err := Verify(h, "correct horse battery stapl"); err != nil || ok {
		t.Fatalf("Verify(wrong) = %v, %v", ok, err)
	}
	h2, _ := Hash("correct horse battery staple")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestVerifyMalformed(t *testing.T) {
	for _, h := range []string{"", "plain", "$argon2i$v=19$m=1,t=1,p=1$AA$AA", "$argon2id$v=19$m=x$AA$AA", "$argon2id$v=19$m=8,t=1,p=1$!!$AA"} {
		if _, err := Verify(h, "x"); err != ErrMalformed {
			t.Errorf("Verify(%q) err = %v, want ErrMalformed", h, err)
		}
	}
}

func TestHashRefusesEmptyAndHuge(t *testing.T) {
	if _, err := Hash(""); err == nil {
		t.Error("empty password accepted")
	}
	if _, err := Hash(strings.Repeat("a", MaxLength+1)); err == nil {
		t.Error("oversized password accepted")
	}
}

func TestStrength(t *testing.T) {
	cases := []struct {
		pw   string
		want int
	}{
		{"", 0},
		{"aaaaaaaaaaaaaaaa", 0},
		{"password", 1},
		{"Tr0ub4dor&3", 3},
		{"vX9#qL2!mZ7$wR4@pK8&", 4},
	}
	for _, c := range cases {
		if got := Strength(c.pw); got != c.want {
			t.Errorf("Strength(%q) = %d, want %d", c.pw, got, c.want)
		}
	}
	if Strength("abc") > Strength("abcdefghijkl") {
		t.Error("a longer password scored lower")
	}
}
