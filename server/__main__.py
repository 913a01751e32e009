from server.serve import main

main()
