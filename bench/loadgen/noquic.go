//go:build !quicgo

package main

import "errors"

var errNoQuic = errors.New("built without QUIC (needs -tags quicgo and quic-go's sources)")

func quicHandshakes(*Run) error { return errNoQuic }

func quicEchoes(*Run) error { return errNoQuic }

func quicIdle(*Run) error { return errNoQuic }
