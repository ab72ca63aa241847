// A Torus gRPC client in Go: create a volume, write, flush, read back, take a snapshot.
// Build and run it with examples/go/run.sh (GOPATH mode, Debian's golang-google-grpc-dev).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	torusv1 "torus.dev/api/torus/v1"
)

func main() {
	address := flag.String("address", "127.0.0.1:9090", "the gRPC API of torus up or torus nbd serve")
	volume := flag.String("volume", "demo-go", "volume to create (kept if it exists)")
	flag.Parse()
	if err := run(*address, *volume); err != nil {
		fmt.Fprintln(os.Stderr, "torus:", err)
		os.Exit(1)
	}
}

func run(address, volume string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Fixed flow-control windows turn off gRPC-Go's bandwidth probe, whose PINGs exceed what the
	// server allows (200 per 30 s) in long transfers (docs/api.md).
	conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(64<<20))
	if err != nil {
		return err
	}
	defer conn.Close()
	volumes := torusv1.NewVolumeServiceClient(conn)
	blocks := torusv1.NewBlockServiceClient(conn)
	snapshots := torusv1.NewSnapshotServiceClient(conn)

	v, err := volumes.CreateVolume(ctx, &torusv1.CreateVolumeRequest{Name: volume, SizeBytes: 64 << 20, IfMissing: true})
	if err != nil {
		return err
	}
	fmt.Printf("volume %s: %d bytes, replication %d\n", v.Volume.Name, v.Volume.SizeBytes, v.Volume.Replication)
	data := bytes.Repeat([]byte("hello from go!! "), 4096) // 64 KiB
	w, err := blocks.Write(ctx, &torusv1.WriteRequest{Volume: volume, Offset: 2 << 20, Data: data})
	if err != nil {
		return err
	}
	if _, err := blocks.Flush(ctx, &torusv1.FlushRequest{Volume: volume, ExpectGeneration: w.Generation}); err != nil {
		return err
	}
	r, err := blocks.Read(ctx, &torusv1.ReadRequest{Volume: volume, Offset: 2 << 20, Length: uint32(len(data))})
	if err != nil {
		return err
	}
	if !bytes.Equal(r.Data, data) {
		return fmt.Errorf("read back other bytes than written")
	}
	fmt.Printf("wrote, flushed and read back %d bytes\n", len(data))
	name := fmt.Sprintf("go-%d", os.Getpid())
	s, err := snapshots.CreateSnapshot(ctx, &torusv1.CreateSnapshotRequest{Volume: volume, Name: name})
	if err != nil {
		return err
	}
	fmt.Printf("snapshot %s@%s taken\n", s.Snapshot.Volume, s.Snapshot.Name)
	r, err = blocks.Read(ctx, &torusv1.ReadRequest{Volume: volume + "@" + name, Offset: 2 << 20, Length: uint32(len(data))})
	if err != nil {
		return err
	}
	if !bytes.Equal(r.Data, data) {
		return fmt.Errorf("the snapshot holds other bytes")
	}
	fmt.Println("the snapshot holds the same bytes: ok")
	return nil
}
