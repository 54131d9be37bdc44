"""`make reproduce`: every model of the zoo through train, eval and attack, and the report on the paper's claims."""
