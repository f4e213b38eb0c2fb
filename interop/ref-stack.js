// Starts the reference PLC directory (in-memory database) and the reference
// PDS on the given ports, prints one JSON line with their URLs, and runs until
// stdin closes or SIGTERM. Usage: node ref-stack.js PLC_PORT PDS_PORT DATA_DIR
const plc = require('@did-plc/server')
const { PDS, envToCfg, envToSecrets } = require('@atproto/pds')
const { Secp256k1Keypair } = require('@atproto/crypto')
const path = require('path')

const [plcPort, pdsPort, dir] = process.argv.slice(2)

;(async () => {
  const plcServer = plc.PlcServer.create({ db: plc.Database.mock(), port: Number(plcPort) })
  await plcServer.start()
  const rotation = await Secp256k1Keypair.create({ exportable: true })
  const env = {
    port: Number(pdsPort),
    hostname: 'localhost',
    dataDirectory: dir,
    blobstoreDiskLocation: path.join(dir, 'blobs'),
    didPlcUrl: `http://localhost:${plcPort}`,
    jwtSecret: 'interop-jwt-secret',
    adminPassword: 'interop-admin',
    plcRotationKeyK256PrivateKeyHex: Buffer.from(await rotation.export()).toString('hex'),
    serviceHandleDomains: ['.test'],
    devMode: true,
    inviteRequired: false,
    disableSsrfProtection: true,
    crawlers: [],
  }
  const pds = await PDS.create(envToCfg(env), envToSecrets(env))
  await pds.start()
  console.log(JSON.stringify({ plc: `http://localhost:${plcPort}`, pds: `http://localhost:${pdsPort}` }))
  const stop = async () => {
    await pds.destroy().catch(() => {})
    await plcServer.destroy().catch(() => {})
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.stdin.on('end', stop)
  process.stdin.resume()
})().catch((e) => {
  console.error(e)
  process.exit(1)
})
