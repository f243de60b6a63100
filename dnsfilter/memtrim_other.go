//go:build !linux

package dnsfilter

func trimStartup() int { return 0 }
