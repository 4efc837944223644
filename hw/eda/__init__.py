"""The EDA flow: Verilog conversion, boards, synthesis, place and route, estimates, fitting."""
