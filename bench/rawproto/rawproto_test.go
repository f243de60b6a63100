package rawproto

import (
	"bytes"
	"strings"
	"testing"
)

func TestReadOpening(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{in: "dxyz", want: "d"},
		{in: "h", want: "h"},
		{in: "p312.5\nrest", want: "p312.5\n"},
		{in: "p" + strings.Repeat("1", maxRateLen) + "\n", want: "p" + strings.Repeat("1", maxRateLen) + "\n"},
		{in: "p" + strings.Repeat("9", maxRateLen+1) + "\n", err: true},
		{in: "p" + strings.Repeat("9", 40) + "\n", err: true},
		{in: "p12", err: true},
		{in: "", err: true},
	} {
		got, err := ReadOpening(bytes.NewReader([]byte(tc.in)))
		if tc.err != (err != nil) || string(got) != tc.want {
			t.Errorf("ReadOpening(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want float64 // 0: an error
	}{
		{"p312.5\n", 312.5},
		{"p1e3\n", 1000},
		{"p0\n", 0},
		{"p-3\n", 0},
		{"pfast\n", 0},
		{"p\n", 0},
		{"d", 0},
		{"p12", 0},
	} {
		got, err := Rate([]byte(tc.msg))
		if (tc.want == 0) != (err != nil) || got != tc.want {
			t.Errorf("Rate(%q) = %v, %v; want %v", tc.msg, got, err, tc.want)
		}
	}
}
