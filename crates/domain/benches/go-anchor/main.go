// End-to-end anchor: Collect of 1,000,000 closed 10 s sessions, then one
// locked rollup at Base+12m1s, timed together on a fresh collector, for two
// fleet shapes: ten_windows (100,000 group keys, the go-seed's rollup_1m
// workload) and one_window (10,000 keys, its collect_closed workload).
// Prints wall and process CPU time (user+sys, all threads: GC included)
// per session.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sort"
	"syscall"
	"time"

	"goseed/seed"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	reps := flag.Int("reps", 10, "runs")
	flag.Parse()
	fmt.Printf("%s GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	w := seed.NewWorkloads(map[string]bool{"rollup_1m": true, "collect_closed": true})
	run("ten_windows", w.Closed100kG, 100_000, *reps)
	run("one_window", w.Closed1M, 10_000, *reps)
}

func run(shape string, in []seed.StatsReport, rows, reps int) {
	var walls, cpus []float64
	for i := 0; i < reps; i++ {
		sc := seed.NewStatsCollector(seed.StatsCollectorOptions{RollupWindow: time.Minute})
		runtime.GC()
		c0, t0 := cpu(), time.Now()
		for j := range in {
			sc.Collect(in[j])
		}
		out := sc.FlushAt(seed.Base.Add(seed.RollupNowOff))
		wall, c := time.Since(t0), cpu()-c0
		if len(out) != rows {
			panic(len(out))
		}
		walls = append(walls, float64(wall.Nanoseconds())/float64(len(in)))
		cpus = append(cpus, float64(c.Nanoseconds())/float64(len(in)))
	}
	sort.Float64s(walls)
	sort.Float64s(cpus)
	fmt.Printf("go_seed_end_to_end %s median cpu %.1f ns/session (min %.1f max %.1f), wall %.1f ns/session (min %.1f)\n",
		shape, cpus[len(cpus)/2], cpus[0], cpus[len(cpus)-1], walls[len(walls)/2], walls[0])
}
