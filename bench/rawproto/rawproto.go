// Package rawproto is the opening message a client sends benchtool's raw
// TCP upstream: one byte, 'd' (download), 'h' (hold), or 'p' followed by a
// rate in MB/s and '\n' (download paced to that rate). bench/relay reads
// it too, to hand a connection to the kernel at the message's end.
package rawproto

import (
	"errors"
	"fmt"
	"io"
	"strconv"
)

// maxRateLen bounds the rate line of a paced opening, '\n' excluded.
const maxRateLen = 16

// ReadOpening reads one opening message from r, byte by byte so that
// nothing after it is consumed, and returns it as sent.
func ReadOpening(r io.Reader) ([]byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, err
	}
	msg := []byte{b[0]}
	if b[0] != 'p' {
		return msg, nil
	}
	for len(msg) <= 1+maxRateLen {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		if msg = append(msg, b[0]); b[0] == '\n' {
			return msg, nil
		}
	}
	return nil, errors.New("paced opening: rate line too long")
}

// Rate returns the rate, in MB/s, of a paced opening message.
func Rate(msg []byte) (float64, error) {
	if len(msg) < 3 || msg[0] != 'p' || msg[len(msg)-1] != '\n' {
		return 0, fmt.Errorf("not a paced opening: %q", msg)
	}
	mbps, err := strconv.ParseFloat(string(msg[1:len(msg)-1]), 64)
	if err != nil || mbps <= 0 {
		return 0, fmt.Errorf("bad rate %q", msg[1:len(msg)-1])
	}
	return mbps, nil
}
