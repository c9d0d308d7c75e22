"""Operations on a whole deployment's state: backup, verify, restore (:mod:`.backup`)."""
