//go:build plantedbugs

package client

var plantedBugs = map[Bug]bool{}

func planted(b Bug) bool { return plantedBugs[b] }

// Plant turns a planted bug on or off (plantedbugs builds only).
func Plant(b Bug, on bool) { plantedBugs[b] = on }
