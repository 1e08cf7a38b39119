module gobpf-sched.bench/workloads

go 1.19
