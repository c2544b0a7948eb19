//go:build !plantedbugs

package client

func planted(Bug) bool { return false }
