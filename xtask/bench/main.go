// The workloads of `cargo xtask bench`. Usage: workloads NAME N.
//
// Prints "ready", waits for a line on stdin (a tracer attaches in between), runs
// the workload N times and prints "ns/op X". With BENCH_TRACE=1 it runs under
// runtime/trace (written to io.Discard), for comparison with gobpf-sched.
//
//	pingpong:  N round trips between two goroutines on unbuffered channels.
//	syscalls:  N write(2) calls of one byte to /dev/null.
//	fanout:    N goroutines started, each signalling a WaitGroup.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime/trace"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func pingpong(n int) {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
}

func syscalls(n int) {
	fd, err := syscall.Open("/dev/null", syscall.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	b := []byte{1}
	for i := 0; i < n; i++ {
		syscall.Write(fd, b)
	}
	syscall.Close(fd)
}

func fanout(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go wg.Done()
	}
	wg.Wait()
}

func main() {
	workloads := map[string]func(int){"pingpong": pingpong, "syscalls": syscalls, "fanout": fanout}
	run, ok := workloads[os.Args[1]]
	if !ok {
		panic("unknown workload " + os.Args[1])
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	run(n / 10) // warm up: stacks grown, caches filled
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	if os.Getenv("BENCH_TRACE") == "1" {
		if err := trace.Start(io.Discard); err != nil {
			panic(err)
		}
		defer trace.Stop()
	}
	start := time.Now()
	run(n)
	fmt.Printf("ns/op %.1f\n", float64(time.Since(start).Nanoseconds())/float64(n))
}
