module gobpf-sched.demo/workload

go 1.19
