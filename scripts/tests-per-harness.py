#!/usr/bin/env python3
"""Counts service/'s Test functions by what they run against: the SLNG
simulator on loopback (with the real client and pool), the in-memory fakes,
or neither (pure cores and helpers). A test counts for the simulator if it,
or a helper it calls, starts one.

Usage: scripts/tests-per-harness.py [REPO_DIR [simulator|fakes|pure]]
The optional kind lists that kind's tests.
"""
import re,sys,glob,os
root=sys.argv[1] if len(sys.argv)>1 else '.'
funcs={}
for f in glob.glob(os.path.join(root,'service','*_test.go')):
    src=open(f).read()
    parts=re.split(r'\n(?=func )',src)
    for p in parts:
        m=re.match(r'func (?:\([^)]*\) )?(\w+)',p)
        if m: funcs.setdefault(m.group(1),'');funcs[m.group(1)]+=p
sim={'newHarness','newPooledHarness','newHarnessWith','newHarnessClient','gatewayVia','startSim'}
fake={'newFakeGateway','newFakeHarness','newFakeUpstream'}
def calls(body,names):
    if 'slngtest.NewServer(' in body and names is sim: return True
    return any(re.search(r'\b'+re.escape(n)+r'\(',body) for n in names)
for _ in range(5):
    for n,b in funcs.items():
        if n.startswith('Test') or n.startswith('Benchmark') or n.startswith('Fuzz'): continue
        body=b.split('\n',1)[1] if '\n' in b else ''
        if calls(body,sim): sim.add(n)
        elif calls(body,fake): fake.add(n)
c={'simulator':[], 'fakes':[], 'pure':[]}
for n,b in funcs.items():
    if not n.startswith('Test') or n=='TestMain': continue
    body=b.split('\n',1)[1]
    k='simulator' if calls(body,sim) else 'fakes' if calls(body,fake) else 'pure'
    c[k].append(n)
for k in c: print(k,len(c[k]))
if len(sys.argv)>2: print(sorted(c[sys.argv[2]]))
