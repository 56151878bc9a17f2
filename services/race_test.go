//go:build race

package services

const raceEnabled = true
