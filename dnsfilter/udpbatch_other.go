//go:build !linux

package dnsfilter

import "net"

func newUDPBatch(pc net.PacketConn) udpBatch { return newPortableBatch(pc) }
