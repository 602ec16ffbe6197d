"""The launcher's local processes: the automaton's prebuild child, the warm process SDK workers fork from."""
