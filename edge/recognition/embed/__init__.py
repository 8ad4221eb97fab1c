"""Face embedding back-ends behind one interface (`base.Embedder`); `factory.make_embedder` picks one."""
