// grpc-bench: sequential 1 MiB block I/O through the Torus gRPC API's Stream, QD requests in
// flight, for Benchmarks/grpc-bench.sh (side by side with fio on NBD). Prints MiB/s.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	torusv1 "torus.dev/api/torus/v1"
)

func main() {
	address := flag.String("address", "127.0.0.1:9090", "the gRPC API")
	volume := flag.String("volume", "bench", "volume")
	op := flag.String("op", "write", "write or read")
	total := flag.Int64("size", 1<<30, "bytes to move")
	bs := flag.Int("bs", 1<<20, "request size")
	qd := flag.Int("qd", 8, "requests in flight")
	flag.Parse()
	mibs, err := run(*address, *volume, *op, *total, *bs, *qd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc-bench:", err)
		os.Exit(1)
	}
	fmt.Printf("%.1f\n", mibs)
}

func run(address, volume, op string, total int64, bs, qd int) (float64, error) {
	ctx := context.Background()
	// Fixed flow-control windows also turn off gRPC-Go's bandwidth probe, whose PINGs (one per
	// burst of data) exceed what the server's HTTP/2 layer allows (200 per 30 s) in a long transfer.
	conn, err := grpc.Dial(address, grpc.WithInsecure(), grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(64<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stream, err := torusv1.NewBlockServiceClient(conn).Stream(ctx)
	if err != nil {
		return 0, err
	}
	data := make([]byte, bs)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	n := int(total / int64(bs))
	start := time.Now()
	errs := make(chan error, 1)
	window := make(chan struct{}, qd) // qd requests in flight, as fio's iodepth
	go func() { // receive
		for i := 0; i < n; i++ {
			r, err := stream.Recv()
			<-window
			if err != nil {
				errs <- fmt.Errorf("after %d of %d answers: %v", i, n, err)
				return
			}
			if r.Code != 0 {
				errs <- fmt.Errorf("request %d: code %d: %s", r.Id, r.Code, r.Message)
				return
			}
		}
		errs <- nil
	}()
	for i := 0; i < n; i++ {
		window <- struct{}{}
		req := &torusv1.BlockRequest{Id: uint64(i)}
		off := uint64(i) * uint64(bs)
		if op == "write" {
			req.Op = &torusv1.BlockRequest_Write{Write: &torusv1.WriteRequest{Volume: volume, Offset: off, Data: data}}
		} else {
			req.Op = &torusv1.BlockRequest_Read{Read: &torusv1.ReadRequest{Volume: volume, Offset: off, Length: uint32(bs)}}
		}
		if err := stream.Send(req); err != nil {
			return 0, fmt.Errorf("send %d: %v; then %v", i, err, <-errs) // the status comes with Recv
		}
	}
	if err := <-errs; err != nil {
		return 0, err
	}
	if op == "write" { // the end flush, as fio's end_fsync
		if err := stream.Send(&torusv1.BlockRequest{Id: uint64(n), Op: &torusv1.BlockRequest_Flush{Flush: &torusv1.FlushRequest{Volume: volume}}}); err != nil {
			return 0, err
		}
		if r, err := stream.Recv(); err != nil || r.Code != 0 {
			return 0, fmt.Errorf("flush: %v %v", err, r)
		}
	}
	stream.CloseSend()
	return float64(total) / (1 << 20) / time.Since(start).Seconds(), nil
}
