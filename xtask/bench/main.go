// The workloads of `cargo xtask bench`. Usage: workloads NAME N.
//
// Prints "ready", waits for a line on stdin (a tracer attaches in between), runs
// the workload N times and prints "ns/op X". With BENCH_TRACE=1 it runs under
// runtime/trace (written to io.Discard), for comparison with gobpf-sched.
//
//	pingpong:  N round trips between two goroutines on unbuffered channels.
//	syscalls:  N write(2) calls of one byte to /dev/null.
//	fanout:    N goroutines started, each signalling a WaitGroup.
//	noop:      N calls of a tiny function that starts with `push %rbp`, an
//	           instruction the kernel emulates: a probe on it measures the floor.
//	http:      N requests to an HTTP server on 127.0.0.1, from 4 client
//	           goroutines in the same process (loopback only, bounded by N).
//	httpfor:   the same for N milliseconds (`cargo xtask soak`); "ns/op" is per
//	           request, and a line "requests R errors E" follows.
//	parked:    N goroutines parked on a channel for 10 s (what watching a
//	           program with many goroutines costs the observer); ns/op per
//	           goroutine.
//	node:      N milliseconds of a modest, steady scheduler load (`cargo xtask
//	           bench node` starts 50 of them): two goroutines make 50 round
//	           trips, then sleep 5 ms, over and over. Prints "ops R cpu_ns C
//	           elapsed_ns E": round trips, and the process's CPU time and the
//	           wall time of the run.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/trace"
	"strconv"
	"sync"
	"sync/atomic"
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

var sink int

// noop has a frame (so it starts with `push %rbp`) and no stack check (nosplit):
// its first instruction is one the kernel emulates for a uprobe.
//
//go:noinline
//go:nosplit
func noop(i int) {
	var pad [4]int
	pad[i&3] = i
	sink += pad[0]
}

func noops(n int) {
	for i := 0; i < n; i++ {
		noop(i)
	}
}

func fanout(n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go wg.Done()
	}
	wg.Wait()
}

var serverURL string

// startServer serves a small response on a loopback port chosen by the kernel.
func startServer() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	}))
	serverURL = "http://" + listener.Addr().String() + "/"
}

func requests(n int) {
	const clients = 4
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				resp, err := http.Get(serverURL)
				if err != nil {
					panic(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

var soakRequests, soakErrors atomic.Int64

// requestsFor makes requests for ms milliseconds from 4 clients, counting
// requests and errors (a soak must not panic on one failed request).
func requestsFor(ms int) {
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := http.Get(serverURL)
				if err != nil {
					soakErrors.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				soakRequests.Add(1)
			}
		}()
	}
	wg.Wait()
}

// parked starts n goroutines that wait on one channel for 10 s, then wakes them.
func parked(n int) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
		}()
	}
	time.Sleep(10 * time.Second)
	close(release)
	wg.Wait()
}

// steady makes round trips in bursts of 50 with 5 ms sleeps, for ms
// milliseconds; returns the round trips made.
func steady(ms int) int {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	ops := 0
	for time.Now().Before(deadline) {
		for i := 0; i < 50; i++ {
			ping <- i
			<-pong
		}
		ops += 50
		time.Sleep(5 * time.Millisecond)
	}
	close(ping)
	return ops
}

// cpuNs is the CPU time of the whole process so far (user + system).
func cpuNs() int64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		panic(err)
	}
	return usage.Utime.Nano() + usage.Stime.Nano()
}

func main() {
	if os.Args[1] == "node" {
		ms, err := strconv.Atoi(os.Args[2])
		if err != nil {
			panic(err)
		}
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		start, cpuStart := time.Now(), cpuNs()
		ops := steady(ms)
		fmt.Printf("ops %d cpu_ns %d elapsed_ns %d\n", ops, cpuNs()-cpuStart, time.Since(start).Nanoseconds())
		return
	}
	workloads := map[string]func(int){"pingpong": pingpong, "syscalls": syscalls, "fanout": fanout, "http": requests, "noop": noops, "parked": parked}
	if os.Args[1] == "httpfor" {
		startServer()
		ms, err := strconv.Atoi(os.Args[2])
		if err != nil {
			panic(err)
		}
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		start := time.Now()
		requestsFor(ms)
		n := soakRequests.Load()
		perRequest := float64(time.Since(start).Nanoseconds())
		if n > 0 {
			perRequest /= float64(n)
		}
		fmt.Printf("ns/op %.1f\n", perRequest)
		fmt.Printf("requests %d errors %d\n", n, soakErrors.Load())
		return
	}
	if os.Args[1] == "http" {
		startServer()
	}
	run, ok := workloads[os.Args[1]]
	if !ok {
		panic("unknown workload " + os.Args[1])
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	if os.Args[1] != "parked" {
		run(n / 10) // warm up: stacks grown, caches filled
	}
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
