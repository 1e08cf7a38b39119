module gobpf-sched/bench-large

go 1.19
