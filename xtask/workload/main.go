// The demo workload of `cargo xtask demo`: a small Go service with the usual
// scheduler traffic, so every line of gobpf-sched's summary has something in it.
//
//   - an HTTP server on 127.0.0.1 with 4 clients (loopback only, paced, stops by
//     itself after -for);
//   - a channel ping-pong pair;
//   - timers: 50 goroutines sleeping 1–20 ms in a loop;
//   - a mutex contended by 8 goroutines;
//   - write(2) calls to /dev/null;
//   - a CPU hog that spins 50 ms every 500 ms, which sysmon preempts with SIGURG.
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	runFor := flag.Duration("for", 10*time.Minute, "stop after this long")
	flag.Parse()
	deadline := time.Now().Add(*runFor)
	running := func() bool { return time.Now().Before(deadline) }

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %d\n", rand.Intn(1000))
	}))
	url := "http://" + listener.Addr().String() + "/"
	for i := 0; i < 4; i++ {
		go func() {
			for running() {
				if resp, err := http.Get(url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	go func() {
		for i := 0; running(); i++ {
			ping <- i
			<-pong
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()

	for i := 0; i < 50; i++ {
		go func() {
			for running() {
				time.Sleep(time.Duration(1+rand.Intn(20)) * time.Millisecond)
			}
		}()
	}

	var mu sync.Mutex
	shared := 0
	for i := 0; i < 8; i++ {
		go func() {
			for running() {
				mu.Lock()
				for j := 0; j < 10000; j++ {
					shared++
				}
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}

	go func() {
		devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		for running() {
			devNull.Write([]byte("x"))
			time.Sleep(time.Millisecond)
		}
	}()

	go func() {
		for running() {
			end := time.Now().Add(50 * time.Millisecond)
			for n := 0; time.Now().Before(end); n++ {
			}
			time.Sleep(450 * time.Millisecond)
		}
	}()

	fmt.Printf("workload pid %d serving on %s\n", os.Getpid(), url)
	time.Sleep(time.Until(deadline))
}
