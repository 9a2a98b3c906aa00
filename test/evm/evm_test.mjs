// The on-chain receipt verifier, tested in an in-process EVM: compiles the
// exported Solidity (fixture from `go run ./test/evm/fixture`) with solc-js,
// deploys it with @ethereumjs/vm (Osaka rules), posts registry roots, and
// checks that a genuine proven batch verifies and every attack is refused,
// printing gas. Usage: node evm_test.mjs FIXTURE.json
import { readFileSync } from 'node:fs'
import solc from 'solc'
import { Common, Hardfork, Mainnet } from '@ethereumjs/common'
import { createLegacyTx } from '@ethereumjs/tx'
import { createAccount, createAddressFromPrivateKey, bytesToHex, hexToBytes } from '@ethereumjs/util'
import { createVM, runTx } from '@ethereumjs/vm'
import { keccak_256 } from '@noble/hashes/sha3.js'

const fx = JSON.parse(readFileSync(process.argv[2] ?? 'fixture.json', 'utf8'))
const HARDFORK = Hardfork.Osaka
const EVM_VERSION = 'osaka'
const CAPACITY_MAX = 1024 // the largest batch capacity (zk.Capacities)

let passed = 0
let failed = 0
function check(name, ok, detail = '') {
  if (ok) {
    passed++
    console.log(`ok   ${name}${detail ? ` (${detail})` : ''}`)
  } else {
    failed++
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ''}`)
  }
}

const solcRuns = () => Number(process.env.SOLC_RUNS ?? 200)

// --- compile ---------------------------------------------------------------
function compile() {
  const sources = {
    'TollgateBatchVerifier.sol': { content: fx.source },
    'GnarkVerifier1.sol': { content: fx.raw_verifier },
    'HardenedVerifier8.sol': { content: fx.v1_shape.source },
    'GnarkVerifier8.sol': { content: fx.v1_shape.raw_verifier },
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: solcRuns() },
      viaIR: process.env.SOLC_VIA_IR === '1',
      evmVersion: EVM_VERSION,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.methodIdentifiers'] } },
    },
  }
  const out = JSON.parse(solc.compile(JSON.stringify(input)))
  const errors = (out.errors ?? []).filter((e) => e.severity === 'error')
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage)
    throw new Error('solc failed')
  }
  return out.contracts
}

// --- EVM helpers -------------------------------------------------------------
const selector = (sig) => bytesToHex(keccak_256(new TextEncoder().encode(sig)).slice(0, 4))
const word = (v) => BigInt(v).toString(16).padStart(64, '0')
const strip = (h) => h.replace(/^0x/, '')

const common = new Common({ chain: Mainnet, hardfork: HARDFORK })
const vm = await createVM({ common })
const keys = { owner: hexToBytes(`0x${'11'.repeat(32)}`), stranger: hexToBytes(`0x${'22'.repeat(32)}`) }
const nonces = {}
for (const [who, key] of Object.entries(keys)) {
  await vm.stateManager.putAccount(createAddressFromPrivateKey(key), createAccount({ nonce: 0n, balance: 10n ** 24n }))
  nonces[who] = 0n
}
const ownerAddress = createAddressFromPrivateKey(keys.owner)

// send runs one transaction and returns its gas and outcome.
async function send({ to, data, from = 'owner', gasLimit = 10_000_000n }) {
  const tx = createLegacyTx({ nonce: nonces[from]++, gasPrice: 10n ** 9n, gasLimit, to, data }, { common }).sign(keys[from])
  const res = await runTx(vm, { tx, skipBlockGasLimitValidation: true })
  const ex = res.execResult
  return {
    ok: ex.exceptionError === undefined,
    gas: res.totalGasSpent,
    execGas: ex.executionGasUsed,
    intrinsic: tx.getIntrinsicGas(),
    ret: bytesToHex(ex.returnValue),
    logs: res.receipt.logs,
    created: res.createdAddress,
    exception: ex.exceptionError?.error,
  }
}

// revertName names a revert: a custom error of abi, or Error(string)'s text.
function revertName(abi, ret) {
  const sel = strip(ret).slice(0, 8)
  if (sel === '08c379a0') {
    const len = Number(BigInt('0x' + strip(ret).slice(8 + 64, 8 + 128)))
    return Buffer.from(strip(ret).slice(8 + 128, 8 + 128 + 2 * len), 'hex').toString()
  }
  for (const e of abi.filter((x) => x.type === 'error')) {
    if (strip(selector(`${e.name}(${e.inputs.map((i) => i.type).join(',')})`)) === sel) return e.name
  }
  return ret === '0x' ? '(no data)' : `unknown ${ret.slice(0, 10)}`
}

async function deploy(contract, args = '') {
  const r = await send({ data: '0x' + contract.evm.bytecode.object + args })
  if (!r.ok || !r.created) throw new Error(`deploy failed: ${r.exception}`)
  return r.created
}

// --- the test ----------------------------------------------------------------
const contracts = compile()
const W = contracts['TollgateBatchVerifier.sol'].TollgateBatchVerifier
const ids = W.evm.methodIdentifiers
const batchTime = BigInt(fx.public.batchTime)
const HOUR = 3_600_000_000_000n

console.log(`circuit ${fx.circuit}, capacity ${fx.capacity}, key ${fx.key_id}; solc ${solc.version()}, EVM ${HARDFORK}`)
check('calldata selector is solc\'s verifyBatch selector', strip(fx.genuine).slice(0, 8) === ids[fx.function], `${ids[fx.function]}`)

const post = (to, root, validFrom, from = 'owner') =>
  send({ to, from, data: '0x' + ids['postRegistryRoot(uint256,uint64)'] + word(root) + word(validFrom) })
const verify = (to, data, gasLimit) => send({ to, data, gasLimit })
const expectRevert = (name, r, want, extra = '') =>
  check(name, !r.ok && revertName(W.abi, r.ret) === want, `${r.ok ? 'accepted' : revertName(W.abi, r.ret)}, gas ${r.gas}${extra}`)

const owner32 = word(BigInt(ownerAddress.toString()))
const w1 = await deploy(W, owner32)

// Registry roots: only the owner posts, times only increase.
expectRevert('a stranger cannot post a registry root', await post(w1, fx.admitted, batchTime - HOUR, 'stranger'), 'NotOwner')
check('owner posts the registry root in force at the batch', (await post(w1, fx.admitted, batchTime - HOUR)).ok)
expectRevert('a root cannot start before the previous one', await post(w1, fx.without_pair, batchTime - 2n * HOUR), 'ValidFromNotIncreasing')

// The genuine batch.
const genuine = await verify(w1, fx.genuine)
check('genuine batch verifies', genuine.ok, `${genuine.exception ?? ''}`)
const ev = genuine.logs.find((l) => bytesToHex(l[1][0]) === bytesToHex(keccak_256(new TextEncoder().encode(
  'BatchVerified(uint256,uint256,uint256,uint256,uint64,uint64,uint64,uint64,uint64)'))))
const p = fx.public
const evOk = ev && BigInt(bytesToHex(ev[1][1])) === BigInt(p.workerId) && BigInt(bytesToHex(ev[1][2])) === BigInt(p.root) &&
  [p.modelVersion, p.registryRoot, p.leafCount, p.totalPrompt, p.totalCompletion, p.sequence, p.batchTime]
    .every((v, i) => BigInt('0x' + bytesToHex(ev[2]).slice(2 + 64 * i, 2 + 64 * (i + 1))) === BigInt(v))
check('BatchVerified carries the batch\'s values', !!evOk)
const view = await send({ to: w1, data: '0x' + ids['checkBatch((uint256,uint256,uint256,uint256,uint64,uint64,uint64,uint64,uint64),bytes)'] + strip(fx.genuine).slice(8) })
check('checkBatch (view) accepts it too', view.ok && view.logs.length === 0)

// Attacks on the batch and its proof.
for (const c of fx.cases) {
  const r = await verify(w1, c.calldata)
  let extra = ''
  let ok = !r.ok && revertName(W.abi, r.ret) === c.error
  if (c.bounded) {
    ok = ok && r.gas <= genuine.gas
    extra = ` ≤ genuine ${genuine.gas}`
  } else if (c.error !== 'ProofInvalid') {
    ok = ok && r.execGas < 15_000n // refused before the pairing
    extra = `, execution ${r.execGas} < 15000`
  }
  check(`refuses ${c.name} — ${c.attack}`, ok, `${r.ok ? 'accepted' : revertName(W.abi, r.ret)}, gas ${r.gas}${extra}`)
}
expectRevert('refuses a batch by an unadmitted key (registry root never posted)', await verify(w1, fx.unadmitted), 'RegistryRootNotInForce')

// Revocation: the operator posts a root without the pair, in force before the batch's time.
check('owner posts a later root without the pair', (await post(w1, fx.without_pair, batchTime - 60_000_000_000n)).ok)
expectRevert('refuses the batch of a revoked pair (a later root was in force at its time)', await verify(w1, fx.genuine), 'RegistryRootNotInForce')
const entry = await send({ to: w1, data: '0x' + ids['registryRoot(uint256)'] + word(0) })
check('registryRoot(0) reports the admitted root until the revocation',
  entry.ok && BigInt('0x' + strip(entry.ret).slice(0, 64)) === BigInt(fx.admitted) &&
  BigInt('0x' + strip(entry.ret).slice(128, 192)) === batchTime - 60_000_000_000n)

// A root posted again later: the batch is judged by the posting in force at its time.
const w2 = await deploy(W, owner32)
await post(w2, fx.admitted, batchTime - HOUR)
await post(w2, fx.without_pair, batchTime + 60_000_000_000n)
await post(w2, fx.admitted, batchTime + 2n * 60_000_000_000n)
const again = await verify(w2, fx.genuine)
check('a batch before its pair\'s revocation still verifies after re-admission', again.ok, `gas ${again.gas}`)
// A batch older than the first root.
const w3 = await deploy(W, owner32)
await post(w3, fx.admitted, batchTime + 1n)
expectRevert('refuses a batch older than the first registry root', await verify(w3, fx.genuine), 'RegistryRootNotInForce')

// Boundaries of the root in force: a root is in force from its validFrom
// (inclusive) to the next root's (exclusive).
const w4 = await deploy(W, owner32)
await post(w4, fx.admitted, batchTime - HOUR)
await post(w4, fx.without_pair, batchTime)
expectRevert('refuses a batch whose time is exactly the revoking root\'s validFrom', await verify(w4, fx.genuine), 'RegistryRootNotInForce')
const w5 = await deploy(W, owner32)
await post(w5, fx.admitted, batchTime)
await post(w5, fx.without_pair, batchTime + 1n)
const edge = await verify(w5, fx.genuine)
check('a batch at its root\'s validFrom, 1 ns before the revocation, verifies', edge.ok, `${edge.ok ? '' : revertName(W.abi, edge.ret)}`)

// Times past 2262 (int64 ns): Tollgate has no encoding for them off chain,
// and a validFrom of 2^64 - 1 made the previous root's validUntil read as
// "open", so two roots were in force at once.
const MAX_TIME = (1n << 63n) - 1n
const w6 = await deploy(W, owner32)
await post(w6, fx.admitted, batchTime - HOUR)
expectRevert('refuses a registry root valid from 2^64 - 1 (the latest root\'s open end)', await post(w6, fx.without_pair, (1n << 64n) - 1n), 'TimeOutOfRange')
expectRevert('refuses a registry root valid from after 2262', await post(w6, fx.without_pair, MAX_TIME + 1n), 'TimeOutOfRange')
check('accepts a registry root valid from the last int64 nanosecond', (await post(w6, fx.without_pair, MAX_TIME)).ok)
const w7 = await deploy(W, owner32)
await post(w7, fx.admitted, batchTime - HOUR)
const genuineHex = strip(fx.genuine)
const timeWord = 8 + 8 * 64 // selector, then root, model version, registry root, worker, four u64s
const farFuture = '0x' + genuineHex.slice(0, timeWord) + word(MAX_TIME + 1n) + genuineHex.slice(timeWord + 64)
expectRevert('refuses a batch time after 2262 before anything else', await verify(w7, farFuture), 'TimeOutOfRange')

// The verifiers alone: gnark's export versus the hardened one.
const G1 = contracts['GnarkVerifier1.sol'].Verifier
const g1 = await deploy(G1)
const rawOne = await verify(g1, fx.verify_proof)
const hardOne = await verify(w1, fx.verify_proof)
check('gnark\'s verifier accepts the genuine proof', rawOne.ok)
check('hardened verifier accepts the genuine proof', hardOne.ok)
const rawUnadmitted = await verify(g1, fx.verify_proof_unadmitted)
check('without TollgateBatchVerifier, gnark\'s verifier accepts the unadmitted key\'s proof (nothing checks its registry root)', rawUnadmitted.ok)
const rawFlip = await verify(g1, fx.verify_proof_flipped, 10_000_000n)
const hardFlip = await verify(w1, fx.verify_proof_flipped, 10_000_000n)
check('flipped proof byte: gnark\'s export burns the gas it is given', !rawFlip.ok && rawFlip.gas > 9_000_000n, `gas ${rawFlip.gas} of 10000000`)
check('flipped proof byte: the hardened verifier refuses it cheaply', !hardFlip.ok && revertName(W.abi, hardFlip.ret) === 'ProofMalformed' && hardFlip.gas < 60_000n,
  `gas ${hardFlip.gas} of 10000000, execution ${hardFlip.execGas}`)
const compress = await send({ to: w1, data: '0x' + ids['compressProof(bytes)'] + strip(fx.verify_proof).slice(8 + 64 * 2) .replace(/^/, word(32)) })
check('compressProof works within the modexp gas cap', compress.ok, compress.exception ?? '')

const S8 = contracts['HardenedVerifier8.sol'].Verifier
const G8 = contracts['GnarkVerifier8.sol'].Verifier
const s8 = await deploy(S8)
const g8 = await deploy(G8)
const rawEight = await verify(g8, fx.v1_shape.calldata)
const hardEight = await verify(s8, fx.v1_shape.calldata)
check('eight-input stand-in verifies (gnark export and hardened)', rawEight.ok && hardEight.ok)

// --- gas report ----------------------------------------------------------------
const row = (what, r) => console.log(`  ${what.padEnd(62)} ${String(r.gas).padStart(8)} ${String(r.execGas).padStart(8)} ${String(r.intrinsic).padStart(9)}`)
console.log('\ngas per batch verification (one transaction)          per tx  execution  intrinsic')
row('v1 shape, 8 public inputs, gnark export verifyProof', rawEight)
row('v1 shape, 8 public inputs, hardened verifyProof', hardEight)
row('v2, 1 public input, gnark export verifyProof', rawOne)
row('v2, 1 public input, hardened verifyProof', hardOne)
row('v2 TollgateBatchVerifier.verifyBatch (roots, digest, event)', genuine)
console.log('  (per tx = intrinsic 21,000 + calldata, plus execution; a refused call pays at least the EIP-7623 calldata floor)')
console.log(`  solc optimizer runs ${solcRuns()}${process.env.SOLC_VIA_IR === '1' ? ', via IR' : ''}`)
console.log(`  per receipt at capacity ${CAPACITY_MAX}: ${(Number(genuine.gas) / CAPACITY_MAX).toFixed(1)} gas (verifier gas does not depend on capacity)`)
check(`verifyBatch within 230000 gas per transaction`, genuine.gas <= 230_000n, `${genuine.gas}`)

console.log(`\n${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
