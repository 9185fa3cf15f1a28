"""The routes, one router per area: reading (predict, read, batch), feedback, model, ops (health,
readiness, metrics, the pad, the docs). Their dependencies are in `deps`, their request bodies in
`inputs`."""
