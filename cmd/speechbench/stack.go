package main

import (
	"context"

	"google.golang.org/grpc"

	"github.com/speech-gateway/speech-gateway/slngclient"
)

// stack is a simulator, the gateway and the floor in front of it, gRPC
// connections to each, and a direct client to the simulator: the three
// paths a benchmark compares.
type stack struct {
	sim, gw, floor      *proc
	gwConns, floorConns []*grpc.ClientConn
	direct              *slngclient.Client
}

// relayGatewayArgs lift the gateway's limits that a wave would meet before
// any relaying: its session cap, its stream cap and its dial rate. The
// dial rate (100 a second by default) protects SLNG from a burst of new
// sessions, and a wave starts every stream at once: with it, part of a
// 500-stream wave is refused with RESOURCE_EXHAUSTED, which the floor,
// with no such limit, never is. The waves measure relaying, not that.
var relayGatewayArgs = []string{"--pool-max-sessions", "100000", "--max-streams", "0", "--dial-rate", "-1"}

func (b *bench) stack(ctx context.Context, simArgs, gwArgs []string, nconns int) (*stack, error) {
	sim, err := b.sim(ctx, simArgs...)
	if err != nil {
		return nil, err
	}
	st := &stack{sim: sim}
	if st.gw, err = b.gateway(ctx, sim.addr, gwArgs...); err != nil {
		return nil, err
	}
	if st.floor, err = b.floor(ctx, sim.addr); err != nil {
		return nil, err
	}
	if b.o.pin {
		b.printf("(gateway pid %d on CPUs %s, floor pid %d on CPUs %s, simulator pid %d on CPUs %s)\n",
			st.gw.cmd.Process.Pid, cpusAllowed(st.gw.cmd.Process.Pid), st.floor.cmd.Process.Pid,
			cpusAllowed(st.floor.cmd.Process.Pid), sim.cmd.Process.Pid, cpusAllowed(sim.cmd.Process.Pid))
	}
	if st.gwConns, err = gatewayClients(st.gw.addr, nconns, b.o.clientWindow); err != nil {
		return nil, err
	}
	if st.floorConns, err = gatewayClients(st.floor.addr, nconns, b.o.clientWindow); err != nil {
		st.close()
		return nil, err
	}
	if st.direct, err = directClient(sim.addr); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

func (st *stack) close() {
	for _, c := range append(st.gwConns, st.floorConns...) {
		_ = c.Close()
	}
}

// interleave runs the waves of one level one after another, starting
// with the level's own one (level modulo their number), so that over the
// levels each path goes first, second and last alike and a drift of the
// machine's speed does not favour one.
func interleave(level int, waves ...func()) {
	for i := range waves {
		waves[(level+i)%len(waves)]()
	}
}
