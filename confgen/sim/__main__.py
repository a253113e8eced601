from confgen.sim.cli import main

raise SystemExit(main())
