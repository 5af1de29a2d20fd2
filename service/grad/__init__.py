"""``POST /grad`` in the server: the parsed call (:mod:`.call`), the validator
(:mod:`.validator`) and the handler that runs a call on the pool and writes the answer
(:mod:`.handler`).
"""
