package services

// WriteStateFile replaces path with data the way the lease file is written
// (writeFileAtomic: temporary file, fsync, rename, directory fsync), for
// other state kept across restarts (the NAT flows).
func WriteStateFile(path string, data []byte) error { return writeFileAtomic(path, data) }

// RemoveStaleStateTemps removes the temporary files a writer of path killed
// mid-write left behind. At start only: one process owns a state file.
func RemoveStaleStateTemps(path string) { removeStaleTemps(path) }
